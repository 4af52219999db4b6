//! Server-sent events framing (the WHATWG `text/event-stream` format): an
//! incremental parser that takes bytes as they arrive, split anywhere, and a
//! writer.

use std::collections::VecDeque;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `event:` field, if any.
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
    pub id: Option<String>,
}

/// The parser refused input that would grow without bound.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an SSE event is longer than the {limit}-byte limit")]
pub struct SseOverflow {
    pub limit: usize,
}

/// Incremental SSE parser.
///
/// Feed bytes with [`SseParser::push`], take events with [`SseParser::next_event`].
/// Lines end with `\n`, `\r\n` or `\r`; comment lines (`:`) are skipped; an
/// event is dispatched at a blank line when it has data.
#[derive(Debug)]
pub struct SseParser {
    line: Vec<u8>,
    /// The previous chunk ended with `\r`: a `\n` starting the next one belongs to it.
    after_cr: bool,
    event: Option<String>,
    data: String,
    has_data: bool,
    id: Option<String>,
    ready: VecDeque<SseEvent>,
    pending_bytes: usize,
    limit: usize,
}

impl Default for SseParser {
    fn default() -> Self {
        Self::new(16 * 1024 * 1024)
    }
}

impl SseParser {
    /// A parser that refuses any single event over `limit` bytes.
    pub fn new(limit: usize) -> Self {
        SseParser {
            line: Vec::new(),
            after_cr: false,
            event: None,
            data: String::new(),
            has_data: false,
            id: None,
            ready: VecDeque::new(),
            pending_bytes: 0,
            limit,
        }
    }

    pub fn push(&mut self, bytes: &[u8]) -> Result<(), SseOverflow> {
        let mut rest = bytes;
        if self.after_cr {
            self.after_cr = false;
            if let Some(b'\n') = rest.first() {
                rest = &rest[1..];
            }
        }
        while let Some(pos) = rest.iter().position(|b| *b == b'\n' || *b == b'\r') {
            self.line.extend_from_slice(&rest[..pos]);
            let was_cr = rest[pos] == b'\r';
            rest = &rest[pos + 1..];
            if was_cr {
                match rest.first() {
                    Some(b'\n') => rest = &rest[1..],
                    None => self.after_cr = true,
                    Some(_) => {}
                }
            }
            let line = std::mem::take(&mut self.line);
            self.line_done(&line);
            if self.pending_bytes > self.limit {
                return Err(SseOverflow { limit: self.limit });
            }
        }
        self.line.extend_from_slice(rest);
        if self.line.len() + self.pending_bytes > self.limit {
            return Err(SseOverflow { limit: self.limit });
        }
        Ok(())
    }

    pub fn next_event(&mut self) -> Option<SseEvent> {
        self.ready.pop_front()
    }

    /// Ends the input: an unterminated final event is dispatched, as the
    /// upstreams that omit the last blank line expect.
    pub fn finish(&mut self) {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.line_done(&line);
        }
        self.dispatch();
    }

    fn line_done(&mut self, line: &[u8]) {
        if line.is_empty() {
            self.dispatch();
            return;
        }
        if line[0] == b':' {
            return;
        }
        let (field, value) = match line.iter().position(|b| *b == b':') {
            Some(i) => {
                let value = &line[i + 1..];
                let value = value.strip_prefix(b" ").unwrap_or(value);
                (&line[..i], value)
            }
            None => (line, &[][..]),
        };
        let value = String::from_utf8_lossy(value);
        self.pending_bytes += value.len();
        match field {
            b"event" => self.event = Some(value.into_owned()),
            b"data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(&value);
                self.has_data = true;
            }
            b"id" => self.id = Some(value.into_owned()),
            _ => {}
        }
    }

    fn dispatch(&mut self) {
        if self.has_data {
            self.ready.push_back(SseEvent {
                event: self.event.take(),
                data: std::mem::take(&mut self.data),
                id: self.id.clone(),
            });
        }
        self.event = None;
        self.data.clear();
        self.has_data = false;
        self.pending_bytes = 0;
    }
}

/// Appends one event to `out`. Multi-line data becomes several `data:` lines.
pub fn write_event(out: &mut Vec<u8>, event: Option<&str>, data: &str) {
    if let Some(event) = event {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(event.as_bytes());
        out.push(b'\n');
    }
    for line in data.split('\n') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line.trim_end_matches('\r').as_bytes());
        out.push(b'\n');
    }
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse_all(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut parser = SseParser::default();
        let mut out = Vec::new();
        for chunk in chunks {
            parser.push(chunk).unwrap();
            while let Some(ev) = parser.next_event() {
                out.push(ev);
            }
        }
        parser.finish();
        while let Some(ev) = parser.next_event() {
            out.push(ev);
        }
        out
    }

    #[test]
    fn parses_openai_and_anthropic_framing() {
        let input = b"event: message_start\ndata: {\"a\":1}\n\n: comment\ndata: [DONE]\n\n";
        let events = parse_all(&[input]);
        assert_eq!(
            events,
            vec![
                SseEvent {
                    event: Some("message_start".into()),
                    data: "{\"a\":1}".into(),
                    id: None
                },
                SseEvent { event: None, data: "[DONE]".into(), id: None },
            ]
        );
    }

    #[test]
    fn crlf_and_multiline_data() {
        let events = parse_all(&[b"data: a\r\ndata:b\r\n\r\nid: 7\rdata: c\r\r"]);
        assert_eq!(events[0].data, "a\nb");
        assert_eq!(events[1].data, "c");
        assert_eq!(events[1].id.as_deref(), Some("7"));
    }

    #[test]
    fn unterminated_last_event_is_dispatched_on_finish() {
        let events = parse_all(&[b"data: tail"]);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].data, "tail");
    }

    #[test]
    fn oversized_event_is_refused() {
        let mut parser = SseParser::new(8);
        assert!(parser.push(b"data: 0123456789").is_err());
    }

    fn arb_event() -> impl Strategy<Value = (Option<String>, String)> {
        (
            proptest::option::of("[a-z_]{1,12}"),
            proptest::collection::vec("[ -~]{0,20}", 1..4).prop_map(|lines| lines.join("\n")),
        )
    }

    proptest! {
        /// Whatever the events and however the bytes are split, the parser
        /// gives back exactly what the writer wrote.
        #[test]
        fn write_then_parse_survives_any_split(
            events in proptest::collection::vec(arb_event(), 0..8),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
        ) {
            let mut bytes = Vec::new();
            for (event, data) in &events {
                write_event(&mut bytes, event.as_deref(), data);
            }
            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
            points.sort_unstable();
            let mut chunks = Vec::new();
            let mut start = 0;
            for p in points {
                chunks.push(&bytes[start..p]);
                start = p;
            }
            chunks.push(&bytes[start..]);
            let parsed = parse_all(&chunks);
            let expected: Vec<SseEvent> = events
                .iter()
                .map(|(event, data)| SseEvent { event: event.clone(), data: data.clone(), id: None })
                .collect();
            prop_assert_eq!(parsed, expected);
        }
    }
}
