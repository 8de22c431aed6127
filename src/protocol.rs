//! The wire: how POP3 lines and replies look on the connection (RFC 1939 §3, RFC 2449 §4).
//!
//! - A command is one line of at most 255 octets including its CRLF (RFC 2449 §4). Bare LF is
//!   accepted too, because `nc` and some telnets send it.
//! - A reply starts with `+OK` or `-ERR`. A multi-line reply continues with lines that end in CRLF,
//!   "byte-stuffs" every line that begins with `.`, and ends with a line holding only `.`.
//! - The size of a message (STAT, LIST) is the number of octets RETR sends for it, counting each
//!   line end as CRLF and not counting stuffing dots (RFC 1939 §5, §11).
//!
//! Everything here works on any `BufRead` or `Write`, so the unit tests below check exact bytes
//! without a socket.

use std::io::{self, BufRead, Write};

/// RFC 2449 §4: "the maximum length of a command is increased from 47 characters (4 character
/// command, single space, 40 character argument, CRLF) to 255 octets, including the terminating
/// CRLF". A server that announces CAPA must accept this much.
pub const MAX_COMMAND_LINE: usize = 255;

/// One line read from the client, with its line end removed.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A line that fits in [`MAX_COMMAND_LINE`].
    Command(Vec<u8>),
    /// A line that did not fit; it has been read to its end and thrown away, so the next read
    /// starts at the next command and the session stays in step.
    TooLong,
}

// ANCHOR: read_line
/// Reads one command line. `Ok(None)` means the client closed the connection.
///
/// At most [`MAX_COMMAND_LINE`] octets are kept; the rest of a longer line is read and discarded
/// a buffer at a time, so a client cannot make the server hold a huge line in memory.
pub fn read_line<R: BufRead>(input: &mut R) -> io::Result<Option<Line>> {
    read_limited(input, MAX_COMMAND_LINE)
}

/// [`read_line`] with another limit than a command line's: SASL responses may be longer
/// (RFC 5034 §4).
pub fn read_limited<R: BufRead>(input: &mut R, limit: usize) -> io::Result<Option<Line>> {
    let mut line = Vec::new();
    let mut too_long = false;
    loop {
        let buf = input.fill_buf()?;
        if buf.is_empty() {
            // End of input in the middle of a line is a dropped connection, not a command.
            return Ok(None);
        }
        let (chunk, found_end) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], true),
            None => (buf, false),
        };
        let used = chunk.len() + usize::from(found_end);
        if !too_long {
            // Keep at most the limit less the LF: the command and, perhaps, its CR.
            if line.len() + chunk.len() > limit - 1 {
                too_long = true;
                line = Vec::new();
            } else {
                line.extend_from_slice(chunk);
            }
        }
        input.consume(used);
        if found_end {
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            // The limit counts a CRLF, so a command line itself may hold 253 octets whichever
            // line end the client used.
            if too_long || line.len() > limit - 2 {
                return Ok(Some(Line::TooLong));
            }
            return Ok(Some(Line::Command(line)));
        }
    }
}
// ANCHOR_END: read_line

// ANCHOR: reply
/// What a command handler answers. Handlers build a `Reply`; only the session loop writes one.
pub enum Reply {
    /// `+OK text` on one line.
    Ok(String),
    /// `-ERR text` on one line.
    Err(String),
    /// `+OK text`, then short lines (scan listings, unique-id listings, capabilities), then `.`.
    Lines(String, Vec<String>),
    /// `+OK text`, then a message read from `body`, then `.`. With `top: Some(n)` only the header,
    /// the blank line and the first `n` lines of the body are sent (TOP, RFC 1939 §7).
    Message {
        status: String,
        body: Box<dyn BufRead + Send>,
        top: Option<u64>,
    },
    /// `+ text`: a SASL challenge, base64 or empty, that asks for one more client line
    /// (RFC 5034 §4).
    #[cfg(feature = "sasl")]
    Challenge(String),
}
// ANCHOR_END: reply

impl Reply {
    /// The first line of the reply without its CRLF, as it appears in logs and transcripts.
    pub fn status_line(&self) -> String {
        match self {
            Reply::Ok(text) | Reply::Lines(text, _) | Reply::Message { status: text, .. } => {
                status("+OK", text)
            }
            Reply::Err(text) => status("-ERR", text),
            // Exactly `+ ` for an empty challenge: the space is part of the syntax.
            #[cfg(feature = "sasl")]
            Reply::Challenge(text) => format!("+ {text}"),
        }
    }

    pub fn is_ok(&self) -> bool {
        !matches!(self, Reply::Err(_))
    }
}

/// "1 message", "2 messages": reply texts are read by people too.
pub fn messages(n: usize) -> String {
    if n == 1 {
        "1 message".to_string()
    } else {
        format!("{n} messages")
    }
}

/// The first line of a reply, cut to fit RFC 1939 §3's 512 octets with its CRLF whatever the text
/// (replies are ASCII, so any cut falls between characters).
fn status(indicator: &str, text: &str) -> String {
    let mut line = if text.is_empty() {
        indicator.to_string()
    } else {
        format!("{indicator} {text}")
    };
    if line.len() > 510 {
        let mut cut = 507;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
        line.push_str("...");
    }
    line
}

// ANCHOR: write_reply
/// Writes a whole reply and returns how many octets of message content it carried (0 for replies
/// that are not a message), so the session can log what it sent.
pub fn write_reply<W: Write>(out: &mut W, reply: Reply) -> io::Result<u64> {
    let first = reply.status_line();
    if let Reply::Message { mut body, top, .. } = reply {
        // The status line, the message and the terminator collect in one buffer, so that a
        // small message leaves in one write (one packet, one wake-up of the client), not three.
        // Sized by the first piece of the message (a short message is all in it), with the room
        // `fn convert_whole_lines` asks for (twice the piece: the worst case of CRs and dots),
        // so that it never has to move the buffer: a short message costs a short buffer.
        let piece = body.fill_buf()?.len().min(STAGE);
        let mut staged = Vec::with_capacity(first.len() + 2 * piece + WINDOW + 8);
        staged.extend_from_slice(first.as_bytes());
        staged.extend_from_slice(b"\r\n");
        let octets = convert(&mut body, out, &mut staged, top)?;
        staged.extend_from_slice(b".\r\n");
        out.write_all(&staged)?;
        return Ok(octets);
    }
    out.write_all(first.as_bytes())?;
    out.write_all(b"\r\n")?;
    match reply {
        Reply::Ok(_) | Reply::Err(_) | Reply::Message { .. } => Ok(0),
        #[cfg(feature = "sasl")]
        Reply::Challenge(_) => Ok(0),
        Reply::Lines(_, lines) => {
            for line in &lines {
                if line.starts_with('.') {
                    out.write_all(b".")?;
                }
                out.write_all(line.as_bytes())?;
                out.write_all(b"\r\n")?;
            }
            out.write_all(b".\r\n")?;
            Ok(0)
        }
    }
}
// ANCHOR_END: write_reply

// ANCHOR: write_message_plain
/// The conversion of a stored message to the wire, one line at a time: the rule as RFC 1939
/// §3 states it, and the reference that the fast [`write_message`] is tested against.
///
/// Per line: take it off the input up to its LF, strip the line end (LF, and one CR before it),
/// put a `.` in front if it starts with one, and send it with CRLF. A last line without LF gets
/// CRLF too. With `top: Some(n)`, stop after the header, the blank line and `n` body lines.
/// Returns the octets sent, stuffing not counted (RFC 1939 §11).
pub fn write_message_plain<R: BufRead, W: Write>(
    input: &mut R,
    out: &mut W,
    top: Option<u64>,
) -> io::Result<u64> {
    let mut octets = 0;
    let mut in_body = false;
    let mut body_lines_left = top;
    let mut line = Vec::new();
    while !(in_body && body_lines_left == Some(0)) {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if line.first() == Some(&b'.') {
            out.write_all(b".")?;
        }
        out.write_all(&line)?;
        out.write_all(b"\r\n")?;
        octets += line.len() as u64 + 2;
        if in_body {
            body_lines_left = body_lines_left.map(|n| n.saturating_sub(1));
        } else if line.is_empty() {
            // RFC 1939 §7: the first empty line separates the header from the body.
            in_body = true;
        }
    }
    Ok(octets)
}
// ANCHOR_END: write_message_plain

// ANCHOR: write_message
/// Sends a stored message as the body of a multi-line reply, without the final `.` line.
/// It sends exactly what [`write_message_plain`] sends, faster.
///
/// The stored file may end its lines with LF, CRLF or a mix; every line goes out ending in CRLF,
/// and a last line without any line end gets one, so the terminator always starts a line.
/// A line that begins with `.` gets one more `.` in front (byte-stuffing, RFC 1939 §3).
/// With `top: Some(n)` the header, the blank line after it and `n` body lines are sent.
///
/// Returns the number of octets sent, not counting stuffing dots. STAT and LIST report sizes
/// from [`message_size`], a faster count of the same thing; the unit and property tests check
/// that the two agree on every kind of input.
///
/// Lines are never held whole: the input is scanned a buffer at a time, so a message with one
/// 50 MB line costs no more memory than one with short lines. All the whole lines of one input
/// buffer are converted in one pass ([`convert_lines`]) into a staging buffer, which goes to `out`
/// in writes of about [`STAGE`] octets: by insertions 64 octets at a time where the processor
/// has AVX-512 VBMI2 ([`expand`]), else per line, finding its LF with [`octet_map`] and copying
/// it once.
pub fn write_message<R: BufRead, W: Write>(
    input: &mut R,
    out: &mut W,
    top: Option<u64>,
) -> io::Result<u64> {
    let mut staged = Vec::with_capacity(4096);
    let octets = convert(input, out, &mut staged, top)?;
    out.write_all(&staged)?;
    Ok(octets)
}

/// The work of [`write_message`]: converted lines collect in `staged` and go to `out` a large
/// piece at a time; what is left in `staged` at the end is the caller's to write. The buffer
/// lives only while a message is being sent, so an idle session does not keep it.
fn convert<R: BufRead, W: Write>(
    input: &mut R,
    out: &mut W,
    staged: &mut Vec<u8>,
    top: Option<u64>,
) -> io::Result<u64> {
    if top.is_some() {
        return convert_counting_lines(input, out, staged, top);
    }
    let mut line = LineState::default();
    loop {
        let buf = input.fill_buf()?;
        if buf.is_empty() {
            line.finish(staged);
            break;
        }
        let mut start = 0;
        // A line begun in the previous buffer is finished the careful way (LineState).
        if line.in_line() {
            match LineEnds::new(buf).next() {
                Some(lf) => {
                    line.put(staged, &buf[..lf], true);
                    line.end(staged);
                    start = lf + 1;
                }
                None => {
                    line.put(staged, buf, false);
                    start = buf.len();
                }
            }
        }
        // Every whole line after it, the fast way; then the start of a line cut off by the
        // buffer's end, the careful way again.
        if let Some(last_lf) = buf[start..].iter().rposition(|&b| b == b'\n') {
            let end = start + last_lf + 1;
            line.octets += convert_lines(&buf[start..end], staged);
            start = end;
        }
        if start < buf.len() {
            line.put(staged, &buf[start..], false);
        }
        let used = buf.len();
        input.consume(used);
        send_when_full(out, staged)?;
    }
    Ok(line.octets)
}

/// Sends the staged octets once there are [`STAGE`] of them: large writes, few system calls.
fn send_when_full<W: Write>(out: &mut W, staged: &mut Vec<u8>) -> io::Result<()> {
    if staged.len() >= STAGE {
        out.write_all(staged)?;
        staged.clear();
    }
    Ok(())
}

// ANCHOR: convert_lines
/// Converts the whole lines of one buffer (see [`convert_whole_lines`]) the fastest way this
/// processor allows: with AVX-512's expand instruction where it has one ([`expand`]), else
/// line by line. Both give the same bytes; the unit tests hold them to it.
fn convert_lines(lines: &[u8], staged: &mut Vec<u8>) -> u64 {
    #[cfg(target_arch = "x86_64")]
    if expand::available() {
        // SAFETY: `available` has just checked that this processor has every feature that
        // `expand::convert_whole_lines` is compiled for.
        return unsafe { expand::convert_whole_lines(lines, staged) };
    }
    convert_whole_lines(lines, staged)
}
// ANCHOR_END: convert_lines

// ANCHOR: convert_whole_lines
/// The line-by-line fast path of [`write_message`] (see [`convert_lines`]): `lines` starts at
/// the start of a line and ends with an LF, and all of it goes to `staged` converted. Returns
/// the octets sent, stuffing not counted.
///
/// It does what [`write_message_plain`] does, line by line, but finds the lines a different
/// way: [`octet_map`] looks at 64 octets at once and returns where the LFs among them are, one bit
/// each, and `trailing_zeros` then walks from one LF to the next without looking at the octets
/// in between. Each line is copied in one piece (a fixed-size piece for lines of usual length),
/// and the staging buffer is made large enough for the worst case first, so that no copy has to
/// grow it. With the benchmark's lines, 48 octets on average, this runs about 1.6 times as fast
/// as finding LFs eight octets at a time while copying (docs/performance.md, round 2).
fn convert_whole_lines(lines: &[u8], staged: &mut Vec<u8>) -> u64 {
    // A local vector, not one behind a reference: every octet stored through a reference could,
    // for all the compiler knows, change the vector's own length, so it would reload it after
    // each store.
    let mut out = std::mem::take(staged);
    let start = out.len();
    // At worst every octet is an LF (each becomes CRLF) and every line starts with a dot; and
    // a line's copy may run a window past its end before it is cut back.
    out.reserve(2 * lines.len() + 1 + WINDOW);
    let mut stuffing = 0;
    if lines.first().is_some_and(|&first| stuffed(first)) {
        out.push(b'.');
        stuffing += 1;
    }
    let mut line_start = 0;
    for block in (0..lines.len()).step_by(64) {
        let mut lfs = octet_map(&block_at(lines, block), b'\n');
        while lfs != 0 {
            let lf = block + lfs.trailing_zeros() as usize;
            lfs &= lfs - 1;
            let line = &lines[line_start..lf];
            let content = line.strip_suffix(b"\r").unwrap_or(line);
            match lines
                .get(line_start..)
                .and_then(<[u8]>::first_chunk::<WINDOW>)
            {
                // Copy a fixed 128 octets, then cut back to the line: a copy of known length is
                // a few moves, where one of any length is a call that must look at the length.
                Some(window) if content.len() <= WINDOW => {
                    out.extend_from_slice(window);
                    out.truncate(out.len() - WINDOW + content.len());
                }
                _ => out.extend_from_slice(content),
            }
            out.extend_from_slice(b"\r\n");
            line_start = lf + 1;
            if lines.get(line_start).is_some_and(|&first| stuffed(first)) {
                out.push(b'.');
                stuffing += 1;
            }
        }
    }
    let sent = (out.len() - start - stuffing) as u64;
    *staged = out;
    sent
}

/// The fixed copy of [`convert_whole_lines`]: longer than most lines of mail (RFC 5322 §2.1.1
/// asks for at most 78 octets before the CRLF), and short enough to be a handful of moves.
const WINDOW: usize = 128;
// ANCHOR_END: convert_whole_lines

// ANCHOR: expand
/// The conversion as insertions, 64 octets at a time, for processors with AVX-512 VBMI2
/// (Intel since Ice Lake, AMD since Zen 4).
///
/// Converting a message only ever adds octets: a CR in front of each LF that has no CR before
/// it, and a `.` in front of each `.` that starts a line. Everything else is copied as it is.
/// So three 64-bit maps (LF, CR, dot) say where octets go in, and the expand instruction
/// (`vpexpandb`) writes 32 input octets spread out over up to 64 places, with gaps left for
/// the new octets. No line is looked at one by one.
#[cfg(target_arch = "x86_64")]
mod expand {
    use std::arch::x86_64::*;

    /// Whether this processor can run [`convert_whole_lines`]. `std` looks the answer up once
    /// and keeps it, so asking for every buffer costs a few loads.
    pub(super) fn available() -> bool {
        is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vbmi2")
            && is_x86_feature_detected!("bmi2")
            && is_x86_feature_detected!("popcnt")
    }

    /// What [`super::convert_whole_lines`] does, with the same result.
    ///
    /// # Safety
    /// The processor must have the features [`available`] checks.
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi2,bmi2,popcnt")]
    pub(super) unsafe fn convert_whole_lines(lines: &[u8], staged: &mut Vec<u8>) -> u64 {
        // At worst every octet gets one in front; and each store writes 64 octets, of which
        // only the first 32 plus insertions count: 64 more than the worst case.
        staged.reserve(2 * lines.len() + 64);
        let start = staged.len();
        let to = staged.spare_capacity_mut().as_mut_ptr().cast::<u8>();
        let mut maps = Maps::new();
        let mut written = 0;
        // Whole blocks first, with plain loads and no lengths to mask by: this loop is where
        // the time goes, and it runs 1.2 to 1.5 times as fast as one that masks every load.
        let (blocks, tail) = lines.as_chunks::<64>();
        for block in blocks {
            // SAFETY: 64 octets at `block`, and 32 from its middle, all inside `lines`. The
            // second load fills the lower 32 places, which are all that `put_half` uses.
            let (input, upper) = unsafe {
                let upper = _mm256_loadu_si256(block[32..].as_ptr().cast());
                (
                    _mm512_loadu_si512(block.as_ptr().cast()),
                    _mm512_zextsi256_si512(upper),
                )
            };
            let (insert, stuffed) = maps.insertions(input);
            // SAFETY (both): `written` is at most twice the octets converted so far, so the
            // 64 octets stored lie inside the capacity reserved above.
            written += 32 + unsafe { put_half(to.add(written), input, insert, stuffed, &maps) };
            let (insert, stuffed) = (insert >> 32, stuffed >> 32);
            written += 32 + unsafe { put_half(to.add(written), upper, insert, stuffed, &maps) };
        }
        // The last octets: a load of only those, zeros in the other places. A zero is neither
        // LF, CR nor dot, so it never gets an insertion.
        if !tail.is_empty() {
            // SAFETY: the mask loads only `tail`'s octets, which lie inside `lines`.
            let input = unsafe { _mm512_maskz_loadu_epi8(first(tail.len()), tail.as_ptr().cast()) };
            let (insert, stuffed) = maps.insertions(input);
            let (low, high) = (tail.len().min(32), tail.len().saturating_sub(32));
            // SAFETY: as above.
            written += low + unsafe { put_half(to.add(written), input, insert, stuffed, &maps) };
            if high > 0 {
                // The upper 32 places moved down (128-bit lanes 2 and 3 to 0 and 1).
                let upper = _mm512_shuffle_i64x2::<0b11_10_11_10>(input, input);
                let (insert, stuffed) = (insert >> 32, stuffed >> 32);
                // SAFETY: as above.
                written +=
                    high + unsafe { put_half(to.add(written), upper, insert, stuffed, &maps) };
            }
        }
        // SAFETY: each store wrote 64 octets from where the previous one's count ended, more
        // than its 32 octets and their insertions, so every octet up to `written` was stored.
        unsafe { staged.set_len(start + written) };
        (written - maps.dots) as u64
    }

    /// The octets to compare against, and what one block leaves for the next.
    struct Maps {
        lf: __m512i,
        cr: __m512i,
        dot: __m512i,
        /// `fn stuffed` decides stuffing for both paths (exercise 3 switches it off there).
        stuffing: u64,
        /// The octet before the current 64, as bit 0 of a map: `lines` starts a line, as if
        /// just after an LF.
        cr_before: u64,
        lf_before: u64,
        /// Stuffing dots written so far: they are not counted as octets sent.
        dots: usize,
    }

    impl Maps {
        #[target_feature(enable = "avx512f")]
        fn new() -> Maps {
            Maps {
                lf: _mm512_set1_epi8(b'\n' as i8),
                cr: _mm512_set1_epi8(b'\r' as i8),
                dot: _mm512_set1_epi8(b'.' as i8),
                stuffing: if super::stuffed(b'.') { u64::MAX } else { 0 },
                cr_before: 0,
                lf_before: 1,
                dots: 0,
            }
        }

        /// Where 64 octets get an octet in front (a CR or a dot), and where a dot: two maps,
        /// one bit per octet.
        #[target_feature(enable = "avx512f,avx512bw,popcnt")]
        fn insertions(&mut self, input: __m512i) -> (u64, u64) {
            let lf = _mm512_cmpeq_epi8_mask(input, self.lf);
            let cr = _mm512_cmpeq_epi8_mask(input, self.cr);
            let dot = _mm512_cmpeq_epi8_mask(input, self.dot);
            // The maps moved up one place say what the octet before each octet is.
            let bare_lf = lf & !((cr << 1) | self.cr_before);
            let stuffed = dot & ((lf << 1) | self.lf_before) & self.stuffing;
            (self.cr_before, self.lf_before) = (cr >> 63, lf >> 63);
            self.dots += stuffed.count_ones() as usize;
            (bare_lf | stuffed, stuffed)
        }
    }

    /// Writes the first 32 octets of `input` to `to` with the insertions of the lower 32 bits
    /// of `insert` (a dot where `stuffed` says so, else a CR), as one 64-octet store. Returns
    /// how many octets it inserted.
    ///
    /// # Safety
    /// 64 octets at `to` must be writable.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi2,bmi2,popcnt")]
    unsafe fn put_half(
        to: *mut u8,
        input: __m512i,
        insert: u64,
        stuffed: u64,
        maps: &Maps,
    ) -> usize {
        let (insert, stuffed) = (insert & first(32), stuffed & first(32));
        // Where the 32 input octets land among 64 output places, as a map. Give every input
        // octet two places, a gap and itself (`pdep` spreads `insert` over the even bits, the
        // odd bits are the octets), then drop the gaps that get no octet: `pext` keeps the bits
        // of that pattern where something is, in order.
        const ODD: u64 = 0xAAAA_AAAA_AAAA_AAAA;
        let kept = _pext_u64(ODD, _pdep_u64(insert, !ODD) | ODD);
        // What fills the gaps: CRs, or where a line is stuffed, dots among them.
        let fill = if stuffed == 0 {
            maps.cr
        } else {
            let new = _mm512_mask_blend_epi8(stuffed, maps.cr, maps.dot);
            _mm512_maskz_expand_epi8(!kept, _mm512_maskz_compress_epi8(insert, new))
        };
        // The expand takes the first 32 places of `input`, one for each bit of `kept`.
        let output = _mm512_mask_expand_epi8(fill, kept, input);
        // SAFETY: the caller's promise.
        unsafe { _mm512_storeu_si512(to.cast(), output) };
        insert.count_ones() as usize
    }

    /// A map of the first `n` places (`n` at most 64).
    #[target_feature(enable = "bmi2")]
    fn first(n: usize) -> u64 {
        _bzhi_u64(u64::MAX, n as u32)
    }
}
// ANCHOR_END: expand

// ANCHOR: stuffed
/// Byte-stuffing (RFC 1939 §3): a message line that starts with this octet gets one more `.` in
/// front, so that no line of the message can be the lone `.` that ends the reply. Every path of
/// [`write_message`] asks here.
fn stuffed(first_octet: u8) -> bool {
    first_octet == b'.'
}
// ANCHOR_END: stuffed

/// The careful path, used for TOP: line by line, counting body lines.
fn convert_counting_lines<R: BufRead, W: Write>(
    input: &mut R,
    out: &mut W,
    staged: &mut Vec<u8>,
    top: Option<u64>,
) -> io::Result<u64> {
    let mut line = LineState::default();
    let mut in_body = false;
    let mut body_lines_left = top;
    loop {
        let buf = input.fill_buf()?;
        if buf.is_empty() {
            line.finish(staged);
            break;
        }
        // Every whole line in this buffer, then the start of the next one if it is cut off.
        let mut start = 0;
        let mut done = false;
        for lf in LineEnds::new(buf) {
            line.put(staged, &buf[start..lf], true);
            let was_blank = line.len == 0;
            line.end(staged);
            start = lf + 1;
            if in_body {
                body_lines_left = body_lines_left.map(|n| n.saturating_sub(1));
            } else if was_blank {
                // RFC 1939 §7: the first empty line separates the header from the body.
                in_body = true;
            }
            if in_body && body_lines_left == Some(0) {
                done = true;
                break;
            }
        }
        if !done && start < buf.len() {
            line.put(staged, &buf[start..], false);
            start = buf.len();
        }
        let used = start;
        input.consume(used);
        send_when_full(out, staged)?;
        if done {
            break;
        }
    }
    Ok(line.octets)
}

/// How much converted message collects before it is written. Each write wakes the client once
/// (when it waits for data, as it does while the server converts), and on loopback that wake-up
/// costs the sender about as much as the copy: 1 MiB per write spent about a tenth less CPU per
/// MB of a large RETR than 256 KiB did, and 4 MiB spent more, as the buffers outgrow the cache
/// (docs/performance.md, round 2). A message up to one input buffer (256 KiB) goes in one write.
const STAGE: usize = 1024 * 1024;

/// Where we are inside the current output line.
#[derive(Default)]
struct LineState {
    /// Content octets of the current line written so far.
    len: u64,
    /// The previous buffer ended in CR: it is a line end if LF follows, content otherwise.
    cr_pending: bool,
    /// Octets written for the whole message, stuffing not counted.
    octets: u64,
}

impl LineState {
    /// Adds `segment`, a piece of the current line that holds no LF. If `ends_line`, an LF
    /// followed it in the input, so one CR just before that LF is part of the line end.
    #[inline]
    fn put(&mut self, out: &mut Vec<u8>, segment: &[u8], ends_line: bool) {
        if self.cr_pending && !(ends_line && segment.is_empty()) {
            self.content(out, b"\r");
        }
        self.cr_pending = false;
        let content = match segment.strip_suffix(b"\r") {
            Some(before_cr) => {
                self.cr_pending = !ends_line;
                before_cr
            }
            None => segment,
        };
        self.content(out, content);
    }

    #[inline]
    fn content(&mut self, out: &mut Vec<u8>, bytes: &[u8]) {
        let Some(&first) = bytes.first() else {
            return;
        };
        if self.len == 0 && stuffed(first) {
            out.push(b'.');
        }
        out.extend_from_slice(bytes);
        self.len += bytes.len() as u64;
        self.octets += bytes.len() as u64;
    }

    /// Inside a line: some of it is written, or a CR that may start its line end is pending.
    fn in_line(&self) -> bool {
        self.len > 0 || self.cr_pending
    }

    /// The input has ended. A partial last line still gets its CRLF (RFC 1939 §3: the
    /// terminator must start a line); a CR left pending was the start of that line end.
    fn finish(&mut self, out: &mut Vec<u8>) {
        if self.in_line() {
            self.end(out);
        }
    }

    #[inline]
    fn end(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"\r\n");
        self.octets += 2;
        self.len = 0;
        self.cr_pending = false;
    }
}
// ANCHOR_END: write_message

// ANCHOR: octet_map
/// Where `byte` is among 64 octets, as a map: bit `i` is set when `block[i] == byte`.
///
/// Every x86-64 processor has SSE2, whose instructions compare sixteen octets with sixteen
/// copies of `byte` at once (`_mm_cmpeq_epi8`) and gather the sixteen results into sixteen bits
/// (`_mm_movemask_epi8`): four of each make the map. Other processors get the same map from
/// [`octet_map_portable`], and a unit test checks that the two agree.
#[cfg(target_arch = "x86_64")]
fn octet_map(block: &[u8; 64], byte: u8) -> u64 {
    use std::arch::x86_64::{_mm_cmpeq_epi8, _mm_movemask_epi8, _mm_set_epi64x, _mm_set1_epi8};

    #[target_feature(enable = "sse2")]
    fn sixteen(octets: &[u8; 16], byte: u8) -> u64 {
        let (halves, _) = octets.as_chunks::<8>();
        let (low, high) = (i64::from_le_bytes(halves[0]), i64::from_le_bytes(halves[1]));
        let equal = _mm_cmpeq_epi8(_mm_set_epi64x(high, low), _mm_set1_epi8(byte as i8));
        u64::from(_mm_movemask_epi8(equal) as u16)
    }

    let (sixteens, _) = block.as_chunks::<16>();
    let mut map = 0;
    for (i, octets) in sixteens.iter().enumerate() {
        // SAFETY: `sixteen` needs SSE2, which is part of x86-64 itself: rustc enables it for
        // every x86_64 target, so every processor this code runs on has it. (Rust does not yet
        // let a feature that is always on vouch for the call, hence `unsafe`.)
        map |= unsafe { sixteen(octets, byte) } << (16 * i);
    }
    map
}

#[cfg(not(target_arch = "x86_64"))]
fn octet_map(block: &[u8; 64], byte: u8) -> u64 {
    octet_map_portable(block, byte)
}

/// [`octet_map`] eight octets at a time with [`octets_equal`], for any processor. Its marks are
/// the top bits of their octets; shifted down, mark `i` is bit `8 * i`. The multiplier
/// 0x0102040810204080 is the sum of `2^(56 - 7 * i)` for `i` in 0..8, so it moves mark `i` to
/// bit `56 + i`: the eight marks meet in the top octet, and no two partial products share a bit,
/// so nothing carries into it.
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
fn octet_map_portable(block: &[u8; 64], byte: u8) -> u64 {
    let (words, _) = block.as_chunks::<8>();
    let mut map = 0;
    for (i, word) in words.iter().enumerate() {
        let marks = octets_equal(u64::from_le_bytes(*word), byte) >> 7;
        map |= (marks.wrapping_mul(0x0102_0408_1020_4080) >> 56) << (8 * i);
    }
    map
}

/// The 64 octets at `bytes[at..]`; past the end, zeros (which are never LF or CR).
fn block_at(bytes: &[u8], at: usize) -> [u8; 64] {
    match bytes[at..].first_chunk::<64>() {
        Some(whole) => *whole,
        None => {
            let mut padded = [0; 64];
            padded[..bytes.len() - at].copy_from_slice(&bytes[at..]);
            padded
        }
    }
}
// ANCHOR_END: octet_map

// ANCHOR: line_ends
/// Marks the octets of `word` (eight octets, little-endian) that equal `byte`: the result has the
/// top bit of each such octet set, and no other bit. The careful path (`LineEnds`, for TOP and
/// for lines cut by a buffer's edge) and [`octet_map_portable`] look at eight octets at a time
/// through here.
///
/// XOR with eight copies of `byte` turns the wanted octets into zero. For each octet, adding
/// 0x7f to its low seven bits sets its top bit unless those bits are all zero (and never carries
/// into the next octet); OR-ing in the octet itself sets the top bit when that bit was one. So the
/// top bit is left clear exactly for the zero octets, and the final NOT marks them.
#[inline]
fn octets_equal(word: u64, byte: u8) -> u64 {
    const LOW7: u64 = u64::from_le_bytes([0x7f; 8]);
    let x = word ^ u64::from_le_bytes([byte; 8]);
    !((x & LOW7).wrapping_add(LOW7) | x | LOW7)
}

/// The eight octets at `bytes[at..]` as a word; past the end, zeros (which are never LF or CR).
#[inline]
fn word_at(bytes: &[u8], at: usize) -> u64 {
    match bytes.get(at..at + 8) {
        Some(eight) => u64::from_le_bytes(eight.try_into().expect("a slice of 8 octets")),
        None => {
            let mut word = [0u8; 8];
            let rest = &bytes[at..];
            word[..rest.len()].copy_from_slice(rest);
            u64::from_le_bytes(word)
        }
    }
}

/// The positions of the LFs in a buffer, in order: an iterator over [`octets_equal`]'s marks.
struct LineEnds<'a> {
    bytes: &'a [u8],
    /// Where the word in `mask` starts, and where the next word starts.
    word: usize,
    next: usize,
    /// The LFs of the current word not yet returned.
    mask: u64,
}

impl<'a> LineEnds<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        LineEnds {
            bytes,
            word: 0,
            next: 0,
            mask: 0,
        }
    }
}

impl Iterator for LineEnds<'_> {
    type Item = usize;

    #[inline]
    fn next(&mut self) -> Option<usize> {
        while self.mask == 0 {
            if self.next >= self.bytes.len() {
                return None;
            }
            self.word = self.next;
            self.next += 8;
            self.mask = octets_equal(word_at(self.bytes, self.word), b'\n');
        }
        let at = self.word + (self.mask.trailing_zeros() / 8) as usize;
        self.mask &= self.mask - 1;
        Some(at)
    }
}
// ANCHOR_END: line_ends

// ANCHOR: message_size
/// The size of a message "in octets" as RFC 1939 §5 defines it for STAT and LIST: what RETR will
/// send, with CRLF line ends, without stuffing.
///
/// It is the stored length, plus one for every LF that [`write_message`] turns into CRLF (an LF
/// without a CR before it), plus the line end a last line without one receives. Counting needs
/// no per-line work, so this is several times faster than running `write_message` into a sink;
/// the unit and property tests check that the two always agree.
pub fn message_size<R: BufRead>(input: &mut R) -> io::Result<u64> {
    let mut size = 0u64;
    // The last octet of the previous buffer: a CR there pairs with an LF that starts this one.
    let mut previous = b'\n';
    loop {
        let buf = input.fill_buf()?;
        let Some(&last) = buf.last() else { break };
        let mut lfs = 0;
        let mut crlfs = 0;
        // A CR in the octet before the current block, as bit 0.
        let mut cr_before = u64::from(previous == b'\r');
        for at in (0..buf.len()).step_by(64) {
            let block = block_at(buf, at);
            let lf = octet_map(&block, b'\n');
            let cr = octet_map(&block, b'\r');
            lfs += u64::from(lf.count_ones());
            // An LF whose previous octet is a CR: the CR map moved one octet up.
            crlfs += u64::from((lf & ((cr << 1) | cr_before)).count_ones());
            cr_before = cr >> 63;
        }
        size += buf.len() as u64 + lfs - crlfs;
        previous = last;
        let used = buf.len();
        input.consume(used);
    }
    // A last line without LF gets CRLF; if it ended in CR, that CR becomes part of the CRLF.
    Ok(match previous {
        b'\n' => size,
        b'\r' => size + 1,
        _ => size + 2,
    })
}
// ANCHOR_END: message_size

#[cfg(test)]
mod tests {
    use super::*;

    fn retr(stored: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        write_reply(
            &mut out,
            Reply::Message {
                status: "3 octets".into(),
                body: Box::new(io::Cursor::new(stored.to_vec())),
                top: None,
            },
        )
        .expect("writing to a Vec cannot fail");
        out
    }

    fn top(stored: &[u8], n: u64) -> Vec<u8> {
        let mut out = Vec::new();
        write_message(&mut &stored[..], &mut out, Some(n)).expect("Vec write");
        out
    }

    /// Un-stuffs a multi-line body the way a client does and checks the terminator.
    fn client_view(wire: &[u8]) -> Vec<u8> {
        let body = wire.strip_suffix(b".\r\n").expect("terminator present");
        let mut out = Vec::new();
        for line in body.split_inclusive(|&b| b == b'\n') {
            assert!(line.ends_with(b"\r\n"), "every line ends in CRLF: {line:?}");
            assert_ne!(line, b".\r\n", "no early terminator");
            out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
        }
        out
    }

    fn size(stored: &[u8]) -> u64 {
        message_size(&mut &stored[..]).expect("reading a slice cannot fail")
    }

    #[test]
    fn b06_crlf_message_passes_through_with_terminator() {
        assert_eq!(retr(b"a\r\nb\r\n"), b"+OK 3 octets\r\na\r\nb\r\n.\r\n");
    }

    #[test]
    fn b06_lf_and_mixed_line_ends_become_crlf() {
        assert_eq!(
            retr(b"a\nb\r\nc\n"),
            b"+OK 3 octets\r\na\r\nb\r\nc\r\n.\r\n"
        );
    }

    #[test]
    fn b06_missing_final_newline_gets_crlf_before_terminator() {
        assert_eq!(retr(b"a\nlast"), b"+OK 3 octets\r\na\r\nlast\r\n.\r\n");
        assert_eq!(size(b"a\nlast"), 9);
    }

    #[test]
    fn b07_lines_starting_with_dot_are_stuffed() {
        assert_eq!(
            retr(b".\n..x\r\n.y\nz.\n"),
            b"+OK 3 octets\r\n..\r\n...x\r\n..y\r\nz.\r\n.\r\n"
        );
    }

    #[test]
    fn b07_a_lone_dot_last_line_without_newline_is_stuffed() {
        assert_eq!(retr(b"a\n."), b"+OK 3 octets\r\na\r\n..\r\n.\r\n");
    }

    #[test]
    fn b07_stuffing_applies_to_listing_lines_too() {
        let mut out = Vec::new();
        let reply = Reply::Lines("x".into(), vec![".hidden".into(), "plain".into()]);
        write_reply(&mut out, reply).expect("Vec write");
        assert_eq!(out, b"+OK x\r\n..hidden\r\nplain\r\n.\r\n");
    }

    #[test]
    fn b19_size_counts_crlf_and_not_stuffing() {
        assert_eq!(size(b"a\nb\n"), 6);
        assert_eq!(size(b"a\r\nb\r\n"), 6);
        assert_eq!(size(b".\n"), 3, "stuffing dot is not counted");
        assert_eq!(size(b""), 0);
    }

    #[test]
    fn b19_size_equals_bytes_sent_minus_stuffing() {
        let samples: [&[u8]; 6] = [
            b"From: a\n\n.\n..\nbody\n",
            b"x\r\r\ny\r",
            b"\r\n\r\n\n",
            b"no newline at all",
            b"\r",
            b"mixed\r\nends\nand .dots\n.start\r\n",
        ];
        for stored in samples {
            let mut wire = Vec::new();
            let octets = write_message(&mut &stored[..], &mut wire, None).expect("Vec write");
            let stuffing = wire
                .split_inclusive(|&b| b == b'\n')
                .filter(|l| l.starts_with(b"."))
                .count() as u64;
            assert_eq!(octets, wire.len() as u64 - stuffing, "{stored:?}");
            assert_eq!(octets, size(stored), "{stored:?}");
        }
    }

    #[test]
    fn line_ends_finds_every_lf_and_nothing_else() {
        for len in 0..40 {
            for at in 0..len {
                let mut bytes = vec![b'x'; len];
                bytes[at] = b'\n';
                let mut expected = vec![at];
                if at + 3 < len {
                    bytes[at + 3] = b'\n';
                    expected.push(at + 3);
                }
                assert_eq!(
                    LineEnds::new(&bytes).collect::<Vec<_>>(),
                    expected,
                    "len {len} at {at}"
                );
            }
            // Octets one bit away from LF, and high octets, are not LF.
            for other in [0x0b, 0x08, 0x8a, 0x4a, 0x00, 0xff, b'\r'] {
                assert_eq!(LineEnds::new(&vec![other; len]).next(), None, "{other:#x}");
            }
        }
    }

    /// The expand path and the line-by-line path give the same octets and counts on whole
    /// lines of every kind: LF and CRLF ends, bare CRs, dots anywhere, empty lines, lines
    /// across every 32-octet step, appended to a buffer that already holds something. The
    /// end-to-end property tests (`tests/properties.rs`) run whichever path this processor
    /// takes; this test holds the two to each other where both can run.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn expand_agrees_with_line_by_line() {
        if !expand::available() {
            return;
        }
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..5_000 {
            let mut lines = Vec::new();
            for _ in 0..next() % 12 {
                let len = match next() % 4 {
                    0 => next() % 3,
                    1 => next() % 40,
                    _ => next() % 140,
                };
                for _ in 0..len {
                    let octet = match next() % (4 + round % 9) {
                        0 => b'.',
                        1 => b'\r',
                        // Any octet at all, now and then: zero, the top bit set, LF's neighbours.
                        2 => [0, 0x09, 0x0b, 0x0c, 0x2d, 0x2f, 0x8a, 0x8d, 0xae, 0xff]
                            [(next() % 10) as usize],
                        _ => b'a' + (next() % 26) as u8,
                    };
                    lines.push(octet);
                }
                if next() % 3 == 0 {
                    lines.push(b'\r');
                }
                lines.push(b'\n');
            }
            // Every length around the 32- and 64-octet steps, not only by chance.
            if round < 200 {
                let len =
                    [31, 32, 33, 63, 64, 65, 95, 96, 97, 127, 128, 129][(round % 12) as usize];
                lines.resize(len - 1, b'.');
                lines.push(b'\n');
            }
            let before = vec![b'x'; (next() % 70) as usize];
            let (mut by_line, mut by_expand) = (before.clone(), before);
            let counted = convert_whole_lines(&lines, &mut by_line);
            // SAFETY: `available` said yes above.
            let expanded = unsafe { expand::convert_whole_lines(&lines, &mut by_expand) };
            assert_eq!(by_expand, by_line, "{:?}", String::from_utf8_lossy(&lines));
            assert_eq!(expanded, counted);
        }
    }

    #[test]
    fn octet_map_agrees_with_the_portable_map_and_with_the_octets() {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        for round in 0..20_000 {
            let mut block = [0u8; 64];
            for octet in block.iter_mut() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                // Dense LFs in some rounds, sparse in others; neighbours of LF (0x09, 0x0b)
                // and octets with the top bit set, which SWAR tricks can get wrong.
                *octet = match (seed >> 8) % (2 + round % 7) {
                    0 => b'\n',
                    1 => [0x09, 0x0b, 0x8a, 0xff, b'\r', 0][(seed % 6) as usize],
                    _ => (seed >> 16) as u8,
                };
            }
            for byte in [b'\n', b'\r'] {
                let want = block
                    .iter()
                    .enumerate()
                    .fold(0u64, |map, (i, &b)| map | (u64::from(b == byte) << i));
                assert_eq!(octet_map(&block, byte), want, "{block:?}");
                assert_eq!(octet_map_portable(&block, byte), want, "{block:?}");
            }
        }
    }

    #[test]
    fn octets_equal_marks_exactly_the_equal_octets() {
        for byte in [b'\n', b'\r', 0u8, 0x80, 0xff] {
            for pattern in 0u32..256 {
                let word: Vec<u8> = (0..8)
                    .map(|i| {
                        if pattern >> i & 1 == 1 {
                            byte
                        } else {
                            byte ^ (1 << (i % 8))
                        }
                    })
                    .collect();
                let mask = octets_equal(
                    u64::from_le_bytes(word.clone().try_into().expect("8")),
                    byte,
                );
                for (i, &b) in word.iter().enumerate() {
                    assert_eq!(mask >> (8 * i + 7) & 1 == 1, b == byte, "{word:?} {i}");
                }
                assert_eq!(mask & !u64::from_le_bytes([0x80; 8]), 0);
            }
        }
    }

    #[test]
    fn b19_message_size_agrees_with_write_message_at_every_buffer_size() {
        let samples: [&[u8]; 9] = [
            b"a\r\nb\nc",
            b"\r",
            b"\r\r",
            b"x\r",
            b"\n\n",
            b"\r\n\r\n",
            b".\r\n..",
            b"",
            b"abc\r\r\n\rz\n",
        ];
        for stored in samples {
            let sent = write_message(&mut &stored[..], &mut io::sink(), None).expect("sink");
            for capacity in 1..=4 {
                let mut small = io::BufReader::with_capacity(capacity, stored);
                assert_eq!(
                    message_size(&mut small).expect("slice"),
                    sent,
                    "{stored:?} at {capacity}"
                );
            }
        }
    }

    #[test]
    fn bare_cr_inside_a_line_is_content() {
        assert_eq!(retr(b"a\rb\n"), b"+OK 3 octets\r\na\rb\r\n.\r\n");
        assert_eq!(retr(b"x\r\r\n"), b"+OK 3 octets\r\nx\r\r\n.\r\n");
    }

    #[test]
    fn line_ends_split_across_buffer_boundaries() {
        let stored = b"ab\r\n.c\r\nd\r\r\n\r\nbody\r\n";
        let mut expected = Vec::new();
        write_message(&mut &stored[..], &mut expected, None).expect("Vec write");
        // A one-byte buffer puts every CR and LF at a boundary.
        let mut tiny = io::BufReader::with_capacity(1, &stored[..]);
        let mut got = Vec::new();
        write_message(&mut tiny, &mut got, None).expect("Vec write");
        assert_eq!(got, expected);
        assert_eq!(
            client_view(&[got, b".\r\n".to_vec()].concat()),
            b"ab\r\n.c\r\nd\r\r\n\r\nbody\r\n"
        );
    }

    #[test]
    fn b25_top_zero_gives_header_and_blank_line() {
        let msg = b"Subject: x\nFrom: y\n\nline1\nline2\n";
        assert_eq!(top(msg, 0), b"Subject: x\r\nFrom: y\r\n\r\n");
        assert_eq!(top(msg, 1), b"Subject: x\r\nFrom: y\r\n\r\nline1\r\n");
        assert_eq!(
            top(msg, 99),
            b"Subject: x\r\nFrom: y\r\n\r\nline1\r\nline2\r\n"
        );
    }

    #[test]
    fn b25_top_counts_crlf_blank_line_and_stuffs() {
        let msg = b"A: b\r\n\r\n.one\r\ntwo\r\n";
        assert_eq!(top(msg, 1), b"A: b\r\n\r\n..one\r\n");
    }

    #[test]
    fn b25_top_of_message_without_body_gives_everything() {
        assert_eq!(top(b"A: b\nC: d", 0), b"A: b\r\nC: d\r\n");
    }

    #[test]
    fn long_lines_are_streamed() {
        let stored = [b"x".repeat(1 << 20), b"\n".to_vec()].concat();
        let mut small = io::BufReader::with_capacity(4096, &stored[..]);
        let mut out = Vec::new();
        let octets = write_message(&mut small, &mut out, None).expect("Vec write");
        assert_eq!(octets, (1 << 20) + 2);
        assert!(out.ends_with(b"x\r\n"));
    }

    #[test]
    fn read_line_accepts_crlf_and_bare_lf() {
        let mut input = &b"STAT\r\nNOOP\nquit"[..];
        assert_eq!(
            read_line(&mut input).expect("read"),
            Some(Line::Command(b"STAT".to_vec()))
        );
        assert_eq!(
            read_line(&mut input).expect("read"),
            Some(Line::Command(b"NOOP".to_vec()))
        );
        assert_eq!(
            read_line(&mut input).expect("read"),
            None,
            "no line end: dropped connection"
        );
    }

    #[test]
    fn x01_255_octets_with_crlf_is_accepted_256_is_not() {
        let ok = [b"X".repeat(253), b"\r\n".to_vec()].concat();
        let long = [b"X".repeat(254), b"\r\n".to_vec()].concat();
        let wire = [ok.clone(), long, b"NOOP\r\n".to_vec()].concat();
        let mut input = io::BufReader::with_capacity(16, &wire[..]);
        assert_eq!(
            read_line(&mut input).expect("read"),
            Some(Line::Command(b"X".repeat(253)))
        );
        assert_eq!(read_line(&mut input).expect("read"), Some(Line::TooLong));
        assert_eq!(
            read_line(&mut input).expect("read"),
            Some(Line::Command(b"NOOP".to_vec()))
        );
    }

    #[test]
    fn a_long_line_is_discarded_to_its_end() {
        let wire = [b"Y".repeat(100_000), b"\nSTAT\n".to_vec()].concat();
        let mut input = io::BufReader::with_capacity(64, &wire[..]);
        assert_eq!(read_line(&mut input).expect("read"), Some(Line::TooLong));
        assert_eq!(
            read_line(&mut input).expect("read"),
            Some(Line::Command(b"STAT".to_vec()))
        );
    }
}
