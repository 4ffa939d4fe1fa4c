//! Page sizes and page tokens, the same for every dialect.
//!
//! Lists are keyset-paginated: a page token is the sort key of the last item returned,
//! base64url-encoded behind a one-letter tag naming the list it belongs to. Keyset
//! tokens stay correct while rows are inserted or deleted between pages (an offset would
//! skip or repeat items). Callers must treat tokens as opaque.

use crate::{PageRequest, Result, StoreError};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

/// Items per page when the caller asks for 0.
pub const DEFAULT_PAGE_SIZE: u32 = 50;
/// Larger requests are served this many items.
pub const MAX_PAGE_SIZE: u32 = 1000;

/// The number of items a page holds.
pub(crate) fn page_size(req: &PageRequest) -> u32 {
    match req.page_size {
        0 => DEFAULT_PAGE_SIZE,
        n => n.min(MAX_PAGE_SIZE),
    }
}

/// Where a list resumes: the sort key of the last item of the previous page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Cursor {
    /// `list_projects`: ordered by projectId.
    Project { project_id: String },
    /// `list_keys` of one project: ordered by create time (µs), then keyId. The project
    /// is part of the token so a token from another project's list is refused.
    Key {
        project_number: i64,
        create_micros: i64,
        key_id: String,
    },
}

impl Cursor {
    pub(crate) fn encode(&self) -> String {
        let raw = match self {
            Cursor::Project { project_id } => format!("p:{project_id}"),
            Cursor::Key {
                project_number,
                create_micros,
                key_id,
            } => format!("k:{project_number}:{create_micros}:{key_id}"),
        };
        URL_SAFE_NO_PAD.encode(raw)
    }

    fn decode(token: &str) -> Option<Cursor> {
        let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(token).ok()?).ok()?;
        let (tag, rest) = raw.split_once(':')?;
        match tag {
            "p" => Some(Cursor::Project {
                project_id: rest.to_owned(),
            }),
            "k" => {
                let (project, rest) = rest.split_once(':')?;
                let (t, id) = rest.split_once(':')?;
                Some(Cursor::Key {
                    project_number: project.parse().ok()?,
                    create_micros: t.parse().ok()?,
                    key_id: id.to_owned(),
                })
            }
            _ => None,
        }
    }
}

fn invalid() -> StoreError {
    StoreError::InvalidArgument("invalid page token".into())
}

/// The projectId after which a `list_projects` page starts (`None`: the first page).
pub(crate) fn project_cursor(req: &PageRequest) -> Result<Option<String>> {
    match req.page_token.as_deref() {
        None | Some("") => Ok(None),
        Some(t) => match Cursor::decode(t) {
            Some(Cursor::Project { project_id }) => Ok(Some(project_id)),
            _ => Err(invalid()),
        },
    }
}

/// The (create time, keyId) after which a `list_keys` page of `project_number` starts.
pub(crate) fn key_cursor(req: &PageRequest, project_number: i64) -> Result<Option<(i64, String)>> {
    match req.page_token.as_deref() {
        None | Some("") => Ok(None),
        Some(t) => match Cursor::decode(t) {
            Some(Cursor::Key {
                project_number: p,
                create_micros,
                key_id,
            }) if p == project_number => Ok(Some((create_micros, key_id))),
            _ => Err(invalid()),
        },
    }
}

/// Cuts the `size + 1` rows a query fetched into a page: the extra row only tells that
/// another page exists, so the last page never carries a token.
pub(crate) fn into_page<T>(
    mut items: Vec<T>,
    size: u32,
    cursor_of: impl Fn(&T) -> Cursor,
) -> crate::Page<T> {
    let size = size as usize;
    let next_page_token = if items.len() > size {
        items.truncate(size);
        items.last().map(|last| cursor_of(last).encode())
    } else {
        None
    };
    crate::Page {
        items,
        next_page_token,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(size: u32, token: Option<&str>) -> PageRequest {
        PageRequest {
            page_size: size,
            page_token: token.map(str::to_owned),
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(page_size(&req(0, None)), DEFAULT_PAGE_SIZE);
        assert_eq!(page_size(&req(7, None)), 7);
        assert_eq!(page_size(&req(1000, None)), 1000);
        assert_eq!(page_size(&req(1001, None)), MAX_PAGE_SIZE);
        assert_eq!(page_size(&req(u32::MAX, None)), MAX_PAGE_SIZE);
    }

    #[test]
    fn cursors_round_trip() {
        let p = Cursor::Project {
            project_id: "my-project-1".into(),
        };
        assert_eq!(
            project_cursor(&req(1, Some(&p.encode()))).unwrap(),
            Some("my-project-1".into())
        );
        let k = Cursor::Key {
            project_number: 7,
            create_micros: -12,
            key_id: "a:b".into(),
        };
        assert_eq!(
            key_cursor(&req(1, Some(&k.encode())), 7).unwrap(),
            Some((-12, "a:b".into()))
        );
        assert_eq!(project_cursor(&req(1, Some(""))).unwrap(), None);
        assert_eq!(key_cursor(&req(1, None), 7).unwrap(), None);
    }

    #[test]
    fn foreign_tokens_are_invalid_arguments() {
        let p = Cursor::Project {
            project_id: "x".into(),
        }
        .encode();
        let not_a_number = URL_SAFE_NO_PAD.encode("k:7:soon:x");
        let no_project = URL_SAFE_NO_PAD.encode("k:1:x");
        let unknown_tag = URL_SAFE_NO_PAD.encode("z:x");
        let no_tag = URL_SAFE_NO_PAD.encode("nope");
        let k = Cursor::Key {
            project_number: 7,
            create_micros: 1,
            key_id: "x".into(),
        }
        .encode();
        let other_project = Cursor::Key {
            project_number: 8,
            create_micros: 1,
            key_id: "x".into(),
        }
        .encode();
        for bad in [
            p.as_str(),
            "!!!",
            &not_a_number,
            &no_project,
            &unknown_tag,
            &no_tag,
            &other_project,
        ] {
            assert!(
                matches!(
                    key_cursor(&req(1, Some(bad)), 7),
                    Err(StoreError::InvalidArgument(_))
                ),
                "{bad}"
            );
        }
        assert!(key_cursor(&req(1, Some(&k)), 7).is_ok());
        assert!(matches!(
            project_cursor(&req(1, Some(&k))),
            Err(StoreError::InvalidArgument(_))
        ));
    }

    #[test]
    fn last_page_has_no_token() {
        let cur = |n: &u32| Cursor::Project {
            project_id: n.to_string(),
        };
        let full = into_page(vec![1, 2, 3, 4], 3, cur);
        assert_eq!(full.items, vec![1, 2, 3]);
        assert_eq!(
            project_cursor(&req(3, full.next_page_token.as_deref())).unwrap(),
            Some("3".into())
        );
        let last = into_page(vec![1, 2, 3], 3, cur);
        assert_eq!(last.items, vec![1, 2, 3]);
        assert!(last.next_page_token.is_none());
        assert!(into_page(Vec::<u32>::new(), 3, cur)
            .next_page_token
            .is_none());
    }
}
