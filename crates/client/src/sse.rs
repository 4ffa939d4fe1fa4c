//! A server-sent-events decoder for `:streamGenerateContent?alt=sse`.
//!
//! Bytes arrive in arbitrary pieces (an event may be split anywhere, even inside a UTF-8
//! sequence or between `\r` and `\n`). Lines end with `\n`, `\r\n` or `\r`; `data:` lines
//! (one optional space after the colon is dropped) accumulate until a blank line ends the
//! event; comments (`:`) and other fields are ignored. An event still open when the body
//! ends is delivered too, as Google's Python SDK does.

/// Incremental SSE decoder: feed it bytes, take out the data of complete events.
#[derive(Debug, Default)]
pub struct SseDecoder {
    buf: Vec<u8>,
    /// Data lines of the event being read.
    data: Vec<String>,
    /// Whether the event being read has at least one `data` field.
    has_data: bool,
}

impl SseDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds bytes; returns the data of every event they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<String> {
        self.buf.extend_from_slice(bytes);
        let mut events = Vec::new();
        let mut start = 0;
        let mut i = 0;
        while i < self.buf.len() {
            match self.buf[i] {
                b'\n' => {
                    self.line(start, i, &mut events);
                    i += 1;
                    start = i;
                }
                b'\r' => {
                    if i + 1 == self.buf.len() {
                        // Could be the first half of `\r\n`: wait for the next byte.
                        break;
                    }
                    self.line(start, i, &mut events);
                    i += if self.buf[i + 1] == b'\n' { 2 } else { 1 };
                    start = i;
                }
                _ => i += 1,
            }
        }
        self.buf.drain(..start);
        events
    }

    /// The body ended: returns the data of an unterminated last event, if any.
    pub fn finish(&mut self) -> Option<String> {
        if !self.buf.is_empty() {
            let rest = std::mem::take(&mut self.buf);
            let end = if rest.last() == Some(&b'\r') {
                rest.len() - 1
            } else {
                rest.len()
            };
            self.field(&rest[..end]);
        }
        self.dispatch()
    }

    fn line(&mut self, start: usize, end: usize, events: &mut Vec<String>) {
        if start == end {
            events.extend(self.dispatch());
        } else {
            let line = self.buf[start..end].to_vec();
            self.field(&line);
        }
    }

    fn field(&mut self, line: &[u8]) {
        let line = String::from_utf8_lossy(line);
        if line.starts_with(':') {
            return;
        }
        let (name, value) = match line.split_once(':') {
            Some((n, v)) => (n, v.strip_prefix(' ').unwrap_or(v)),
            None => (line.as_ref(), ""),
        };
        if name == "data" {
            self.data.push(value.to_owned());
            self.has_data = true;
        }
    }

    fn dispatch(&mut self) -> Option<String> {
        if !self.has_data {
            return None;
        }
        self.has_data = false;
        let data = std::mem::take(&mut self.data).join("\n");
        Some(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_EVENTS: &str = "data: {\"a\": 1}\r\n\r\ndata: {\"b\": \"\u{e9}t\u{e9}\"}\r\n\r\n";

    fn decode_in_pieces(input: &[u8], piece: usize) -> Vec<String> {
        let mut d = SseDecoder::new();
        let mut out = Vec::new();
        for chunk in input.chunks(piece) {
            out.extend(d.feed(chunk));
        }
        out.extend(d.finish());
        out
    }

    #[test]
    fn crlf_delimited_events() {
        let out = decode_in_pieces(TWO_EVENTS.as_bytes(), 4096);
        assert_eq!(out, vec![r#"{"a": 1}"#, "{\"b\": \"\u{e9}t\u{e9}\"}"]);
    }

    #[test]
    fn events_split_across_reads_at_every_size() {
        let whole = decode_in_pieces(TWO_EVENTS.as_bytes(), 4096);
        for piece in 1..TWO_EVENTS.len() {
            assert_eq!(
                decode_in_pieces(TWO_EVENTS.as_bytes(), piece),
                whole,
                "piece size {piece}"
            );
        }
    }

    #[test]
    fn lf_and_cr_line_endings() {
        assert_eq!(
            decode_in_pieces(b"data: 1\n\ndata: 2\n\n", 3),
            vec!["1", "2"]
        );
        assert_eq!(
            decode_in_pieces(b"data: 1\r\rdata: 2\r\r", 1),
            vec!["1", "2"]
        );
    }

    #[test]
    fn comments_other_fields_and_multiline_data() {
        let input = b": keepalive\n\nevent: message\nid: 7\ndata: {\"x\":\ndata:1}\n\n";
        assert_eq!(decode_in_pieces(input, 5), vec!["{\"x\":\n1}"]);
    }

    #[test]
    fn a_last_event_without_blank_line_is_delivered() {
        assert_eq!(
            decode_in_pieces(b"data: 1\r\n\r\ndata: 2", 2),
            vec!["1", "2"]
        );
        assert_eq!(decode_in_pieces(b"data: 3\r\n", 2), vec!["3"]);
        assert!(decode_in_pieces(b"", 1).is_empty());
    }
}
