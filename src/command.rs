//! Commands: from a line of octets to a keyword and its arguments (RFC 1939 §3).
//!
//! ```text
//! command  = keyword *(SP argument) CRLF
//! keyword  = 3 or 4 letters, case-insensitive ("stat", "Stat" and "STAT" are one command)
//! ```
//!
//! Parsing knows nothing about states: whether a command is allowed now is the business of
//! `authorization.rs` and `transaction.rs`. Only the shapes of arguments that several commands
//! share (a message number, a line count) are checked here, so every command words its errors the
//! same way.

/// A parsed command line.
#[derive(Debug, PartialEq, Eq)]
pub struct Command {
    /// The keyword in upper case.
    pub keyword: String,
    /// Everything after the keyword and one space, exactly as sent. PASS takes this whole, because
    /// a password may contain spaces (RFC 1939 §7).
    pub rest: String,
    /// `rest` split at spaces, for commands whose arguments cannot contain a space.
    pub args: Vec<String>,
}

// ANCHOR: parse
/// Splits a command line into keyword and arguments, or says what is wrong with it.
///
/// The text of an `Err` becomes the reply after `-ERR `.
pub fn parse(line: &[u8]) -> Result<Command, String> {
    let Ok(text) = std::str::from_utf8(line) else {
        return Err("a command line must be plain text (this one holds non-UTF-8 octets)".into());
    };
    if let Some(c) = text.chars().find(|c| c.is_control()) {
        return Err(format!(
            "a command line must not hold control characters (found {:#04x})",
            u32::from(c)
        ));
    }
    let (keyword, rest) = text.split_once(' ').unwrap_or((text, ""));
    if keyword.is_empty() {
        return Err("empty command: type a keyword such as CAPA, USER or QUIT".into());
    }
    if !(3..=4).contains(&keyword.len()) || !keyword.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(format!(
            "\"{}\" is not a command: keywords are 3 or 4 letters, such as STAT (try CAPA)",
            shorten(keyword)
        ));
    }
    Ok(Command {
        keyword: keyword.to_ascii_uppercase(),
        rest: rest.to_string(),
        // Tolerate doubled and trailing spaces: people type these in telnet.
        args: rest
            .split(' ')
            .filter(|a| !a.is_empty())
            .map(String::from)
            .collect(),
    })
}
// ANCHOR_END: parse

impl Command {
    /// Checks that the command has between `min` and `max` arguments.
    pub fn expect_args(&self, min: usize, max: usize, syntax: &str) -> Result<(), String> {
        let n = self.args.len();
        if n < min {
            Err(format!(
                "{} needs more arguments: the syntax is {syntax}",
                self.keyword
            ))
        } else if n > max {
            Err(format!(
                "{} takes fewer arguments: the syntax is {syntax}",
                self.keyword
            ))
        } else {
            Ok(())
        }
    }
}

// ANCHOR: number
/// Reads a non-negative decimal number as RFC 1939 writes them: digits only, no sign, no spaces.
/// `what` names the argument in the error ("message number", "line count").
pub fn parse_number(arg: &str, what: &str) -> Result<u64, String> {
    if arg.is_empty() || !arg.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "\"{}\" is not a {what}: use plain decimal digits, like 1",
            shorten(arg)
        ));
    }
    arg.parse::<u64>()
        .map_err(|_| format!("{what} {} is far too large", shorten(arg)))
}
// ANCHOR_END: number

/// Quoting user input in a reply: at most 40 characters, and anything that is not printable
/// ASCII as an escape (`\u{e9}`), because replies are ASCII (RFC 1939 §3; RFC 6856 §2.1 forbids
/// raw non-ASCII to a client that did not ask for UTF-8).
fn shorten(s: &str) -> String {
    let mut quoted = String::new();
    for (n, c) in s.chars().enumerate() {
        if n == 40 {
            quoted.push_str("...");
            break;
        }
        if c == ' ' || c.is_ascii_graphic() {
            quoted.push(c);
        } else {
            quoted.extend(c.escape_unicode());
        }
    }
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn b02_keywords_are_case_insensitive() {
        for line in ["stat", "Stat", "STAT", "sTaT"] {
            assert_eq!(parse(line.as_bytes()).expect("valid").keyword, "STAT");
        }
    }

    #[test]
    fn b29_rest_keeps_spaces_for_pass() {
        let cmd = parse(b"PASS  two words ").expect("valid");
        assert_eq!(cmd.rest, " two words ");
        assert_eq!(cmd.args, ["two", "words"]);
    }

    #[test]
    fn b08_bad_keywords_are_refused() {
        for line in ["", " STAT", "ST", "STATS", "ST4T", "\u{e9}tat"] {
            assert!(parse(line.as_bytes()).is_err(), "{line:?}");
        }
        assert!(parse(b"\xff\xfe").is_err());
        assert!(parse(b"NOOP\0").is_err());
    }

    #[test]
    fn b15_numbers_are_plain_decimal() {
        assert_eq!(parse_number("1", "message number"), Ok(1));
        assert_eq!(parse_number("0", "message number"), Ok(0));
        for bad in ["", "-1", "+1", "1x", " 1", "0x1", "1.0"] {
            assert!(parse_number(bad, "message number").is_err(), "{bad:?}");
        }
        let err = parse_number("99999999999999999999", "message number").expect_err("too big");
        assert!(err.contains("too large"), "{err}");
        let err = parse_number("\u{e9}t\u{e9}", "message number").expect_err("not digits");
        assert!(err.is_ascii(), "replies stay ASCII: {err}");
    }
}
