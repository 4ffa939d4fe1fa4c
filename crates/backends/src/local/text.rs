//! Turns the byte pieces of generated tokens into text that is safe to hand out.
//!
//! Two rules: never hand out part of a UTF-8 character (a token can end in the middle of
//! one), and never hand out text that a stop sequence may still claim. A tail of the
//! text that could be the start of a stop sequence is held back until the next tokens
//! decide it; when a stop sequence is complete, the text ends right before it.

/// What the newest piece produced.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Progress {
    /// Text that is now safe to emit (may be empty); generation goes on.
    Continue(String),
    /// A stop sequence completed: the text before it that was not emitted yet. Generation ends.
    Stopped(String),
}

#[derive(Debug)]
pub(crate) struct TextAssembler {
    stops: Vec<String>,
    /// Bytes of an unfinished UTF-8 character.
    pending: Vec<u8>,
    /// All text decoded so far.
    text: String,
    /// How many bytes of `text` have been handed out.
    emitted: usize,
}

impl TextAssembler {
    pub(crate) fn new(stops: &[String]) -> Self {
        Self {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            pending: Vec::new(),
            text: String::new(),
            emitted: 0,
        }
    }

    /// Adds the bytes of one token.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> Progress {
        self.pending.extend_from_slice(bytes);
        self.decode_pending();
        if let Some(at) = self.find_stop() {
            let out = self.text[self.emitted..at].to_owned();
            self.text.truncate(at);
            self.emitted = at;
            return Progress::Stopped(out);
        }
        let safe = self.text.len() - self.held_back();
        let out = self.text[self.emitted..safe].to_owned();
        self.emitted = safe;
        Progress::Continue(out)
    }

    /// Generation ended without a stop sequence: everything not handed out yet, with an
    /// unfinished character (if any) replaced by U+FFFD.
    pub(crate) fn finish(&mut self) -> String {
        if !self.pending.is_empty() {
            let tail = String::from_utf8_lossy(&self.pending).into_owned();
            self.text.push_str(&tail);
            self.pending.clear();
        }
        let out = self.text[self.emitted..].to_owned();
        self.emitted = self.text.len();
        out
    }

    /// Moves every complete character from `pending` to `text`; invalid bytes become U+FFFD.
    fn decode_pending(&mut self) {
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    self.text.push_str(s);
                    self.pending.clear();
                    return;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // The prefix up to `valid` is UTF-8, as the error says.
                    self.text
                        .push_str(&String::from_utf8_lossy(&self.pending[..valid]));
                    match e.error_len() {
                        // An unfinished character at the end: wait for more bytes.
                        None => {
                            self.pending.drain(..valid);
                            return;
                        }
                        Some(bad) => {
                            self.text.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid + bad);
                        }
                    }
                }
            }
        }
    }

    /// Byte offset in `text` of the earliest complete stop sequence not yet emitted.
    /// A stop cannot begin before `emitted`, since any tail that could begin one is held back.
    fn find_stop(&self) -> Option<usize> {
        let window = &self.text[self.emitted..];
        self.stops
            .iter()
            .filter_map(|stop| window.find(stop.as_str()))
            .min()
            .map(|at| self.emitted + at)
    }

    /// Length of the longest unemitted suffix of `text` that is a proper prefix of a stop.
    fn held_back(&self) -> usize {
        let window = &self.text[self.emitted..];
        self.stops
            .iter()
            .map(|stop| {
                let longest = (stop.len() - 1).min(window.len());
                (1..=longest)
                    .rev()
                    .find(|&k| stop.is_char_boundary(k) && window.ends_with(&stop[..k]))
                    .unwrap_or(0)
            })
            .max()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&[u8]]) -> (Vec<String>, Option<String>, String) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut asm = TextAssembler::new(&stops);
        let mut out = Vec::new();
        for piece in pieces {
            match asm.push(piece) {
                Progress::Continue(t) => out.push(t),
                Progress::Stopped(t) => {
                    out.push(t);
                    let all = out.concat();
                    return (out, Some("stopped".into()), all);
                }
            }
        }
        out.push(asm.finish());
        let all = out.concat();
        (out, None, all)
    }

    #[test]
    fn plain_text_passes_through_token_by_token() {
        let (out, stop, all) = run(&[], &[b"Hello", b" world", b"!"]);
        assert_eq!(out, vec!["Hello", " world", "!", ""]);
        assert_eq!(stop, None);
        assert_eq!(all, "Hello world!");
    }

    #[test]
    fn split_multibyte_characters_are_buffered() {
        let euro = "€".as_bytes(); // 3 bytes
        let crab = "🦀".as_bytes(); // 4 bytes
        let (out, _, all) = run(
            &[],
            &[
                b"a",
                &euro[..1],
                &euro[1..],
                &crab[..2],
                &crab[2..3],
                &crab[3..],
                b"z",
            ],
        );
        assert_eq!(all, "a€🦀z");
        assert_eq!(out, vec!["a", "", "€", "", "", "🦀", "z", ""]);
    }

    #[test]
    fn unfinished_character_at_the_end_becomes_replacement() {
        let euro = "€".as_bytes();
        let (_, _, all) = run(&[], &[b"x", &euro[..2]]);
        assert_eq!(all, "x\u{FFFD}");
    }

    #[test]
    fn invalid_bytes_become_replacement_and_decoding_goes_on() {
        let (_, _, all) = run(&[], &[b"a\xffb", b"c"]);
        assert_eq!(all, "a\u{FFFD}bc");
    }

    #[test]
    fn stop_sequence_inside_one_piece_truncates() {
        let (out, stop, all) = run(&["END"], &[b"one two", b" ENDthree"]);
        assert_eq!(stop.as_deref(), Some("stopped"));
        assert_eq!(all, "one two ");
        assert_eq!(out.last().map(String::as_str), Some(" "));
    }

    #[test]
    fn stop_sequence_across_pieces_is_held_back_then_dropped() {
        let (out, stop, all) = run(&["<stop>"], &[b"ab<", b"st", b"op>", b"never"]);
        assert_eq!(stop.as_deref(), Some("stopped"));
        assert_eq!(out, vec!["ab", "", ""]);
        assert_eq!(all, "ab");
    }

    #[test]
    fn held_back_prefix_is_released_when_it_turns_out_not_to_be_a_stop() {
        let (out, stop, all) = run(&["<stop>"], &[b"ab<", b"st", b"x"]);
        assert_eq!(stop, None);
        assert_eq!(out, vec!["ab", "", "<stx", ""]);
        assert_eq!(all, "ab<stx");
    }

    #[test]
    fn held_back_prefix_is_released_at_the_end() {
        let (out, stop, all) = run(&["STOP"], &[b"go ST"]);
        assert_eq!(stop, None);
        assert_eq!(out, vec!["go ", "ST"]);
        assert_eq!(all, "go ST");
    }

    #[test]
    fn earliest_of_several_stops_wins() {
        let (_, stop, all) = run(&["world", "lo w"], &[b"hello world"]);
        assert_eq!(stop.as_deref(), Some("stopped"));
        assert_eq!(all, "hel");
    }

    #[test]
    fn multibyte_stop_sequence_split_inside_a_character() {
        let stop = "été";
        let bytes = "c'était l'été".as_bytes();
        let pieces: Vec<&[u8]> = bytes.chunks(1).collect();
        let (out, s, all) = run(&[stop], &pieces);
        assert_eq!(s.as_deref(), Some("stopped"));
        assert_eq!(all, "c'était l'");
        assert!(out.iter().all(|t| !t.contains('\u{FFFD}')));
    }

    #[test]
    fn empty_stop_sequences_are_ignored() {
        let (_, stop, all) = run(&[""], &[b"abc"]);
        assert_eq!(stop, None);
        assert_eq!(all, "abc");
    }
}
