//! TDS framing and token encoding for the test server (MS-TDS 2.2). Everything read
//! from the wire goes through [`Reader`], which fails instead of panicking on short or
//! malformed input.

use std::io;

use chrono::{NaiveDate, NaiveDateTime, NaiveTime, Timelike};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub const PKT_SQL_BATCH: u8 = 0x01;
pub const PKT_RPC: u8 = 0x03;
pub const PKT_REPLY: u8 = 0x04;
pub const PKT_ATTENTION: u8 = 0x06;
pub const PKT_LOGIN7: u8 = 0x10;
pub const PKT_PRELOGIN: u8 = 0x12;

const STATUS_EOM: u8 = 0x01;
const STATUS_IGNORE: u8 = 0x02;
const HEADER_LEN: usize = 8;

pub const DONE_FINAL: u16 = 0x0000;
pub const DONE_ERROR: u16 = 0x0002;
pub const DONE_COUNT: u16 = 0x0010;
pub const DONE_ATTN: u16 = 0x0020;

pub const TOKEN_DONE: u8 = 0xFD;
pub const TOKEN_DONEPROC: u8 = 0xFE;
pub const TOKEN_DONEINPROC: u8 = 0xFF;

/// SQL_Latin1_General_CP1_CI_AS: LCID 0x0409, case/accent/kana/width flags, sort id 52
/// (code page 1252). Sent for VARCHAR columns and as the session collation.
pub const COLLATION: [u8; 5] = [0x09, 0x04, 0xD0, 0x00, 0x34];

/// A whole message: the payload of one or more packets up to end-of-message.
pub struct Message {
    pub kind: u8,
    pub payload: Vec<u8>,
}

/// Reads one message. `Ok(None)` on a clean end of stream between messages.
pub async fn read_message<R: AsyncRead + Unpin>(
    r: &mut R,
    max_len: usize,
) -> io::Result<Option<Message>> {
    let mut payload = Vec::new();
    let mut kind = None;
    loop {
        let mut header = [0u8; HEADER_LEN];
        match r.read_exact(&mut header).await {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && kind.is_none() => {
                return Ok(None)
            }
            Err(e) => return Err(e),
        }
        let length = usize::from(u16::from_be_bytes([header[2], header[3]]));
        if length < HEADER_LEN {
            return Err(invalid("packet shorter than its header"));
        }
        let this_kind = header[0];
        // Client packet types of MS-TDS 2.2.3.1.1; anything else (a TLS record, a stray
        // protocol) is not worth waiting for.
        if !matches!(
            this_kind,
            0x01 | 0x03 | 0x06 | 0x07 | 0x0E | 0x10 | 0x11 | 0x12
        ) {
            return Err(invalid("not a TDS client packet"));
        }
        if kind.is_some_and(|k| k != this_kind) {
            return Err(invalid("packet type changed inside a message"));
        }
        kind = Some(this_kind);
        if payload.len() + length > max_len {
            return Err(invalid("message too large"));
        }
        let start = payload.len();
        payload.resize(start + length - HEADER_LEN, 0);
        r.read_exact(&mut payload[start..]).await?;
        let status = header[1];
        if status & STATUS_EOM != 0 {
            if status & STATUS_IGNORE != 0 {
                // The client abandoned this message half-way: nothing to answer.
                payload.clear();
                kind = None;
                continue;
            }
            return Ok(Some(Message {
                kind: this_kind,
                payload,
            }));
        }
    }
}

/// Writes `payload` as a reply message split into packets of at most `packet_size`.
pub async fn write_message<W: AsyncWrite + Unpin>(
    w: &mut W,
    payload: &[u8],
    packet_size: usize,
    spid: u16,
) -> io::Result<()> {
    let room = packet_size.max(512) - HEADER_LEN;
    let mut out = Vec::with_capacity(payload.len() + (payload.len() / room + 1) * HEADER_LEN);
    let mut chunks = payload.chunks(room).peekable();
    let mut packet_id: u8 = 1;
    if chunks.peek().is_none() {
        out.extend_from_slice(&header(PKT_REPLY, STATUS_EOM, HEADER_LEN, spid, packet_id));
    }
    while let Some(chunk) = chunks.next() {
        let status = if chunks.peek().is_none() {
            STATUS_EOM
        } else {
            0
        };
        out.extend_from_slice(&header(
            PKT_REPLY,
            status,
            chunk.len() + HEADER_LEN,
            spid,
            packet_id,
        ));
        out.extend_from_slice(chunk);
        packet_id = packet_id.wrapping_add(1);
    }
    w.write_all(&out).await?;
    w.flush().await
}

fn header(kind: u8, status: u8, len: usize, spid: u16, id: u8) -> [u8; HEADER_LEN] {
    let len = (len as u16).to_be_bytes();
    let spid = spid.to_be_bytes();
    [kind, status, len[0], len[1], spid[0], spid[1], id, 0]
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_string())
}

/// A bounds-checked cursor over a message payload.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

pub type WireResult<T> = Result<T, String>;

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }
    pub fn at(buf: &'a [u8], pos: usize) -> Self {
        Reader { buf, pos }
    }
    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }
    pub fn bytes(&mut self, n: usize) -> WireResult<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|end| *end <= self.buf.len())
            .ok_or_else(|| format!("message ends early (wanted {n} bytes at {})", self.pos))?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }
    fn array<const N: usize>(&mut self) -> WireResult<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N)?);
        Ok(out)
    }
    pub fn u8(&mut self) -> WireResult<u8> {
        Ok(self.array::<1>()?[0])
    }
    pub fn u16_le(&mut self) -> WireResult<u16> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    pub fn u32_le(&mut self) -> WireResult<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub fn u64_le(&mut self) -> WireResult<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    /// `n` UTF-16LE code units.
    pub fn ucs2(&mut self, n: usize) -> WireResult<String> {
        let raw = self.bytes(n.checked_mul(2).ok_or("length overflow")?)?;
        Ok(utf16_to_string(raw))
    }
    pub fn b_varchar(&mut self) -> WireResult<String> {
        let n = self.u8()?;
        self.ucs2(n.into())
    }
}

/// UTF-16LE bytes to a string; unpaired surrogates become U+FFFD rather than an error.
pub fn utf16_to_string(raw: &[u8]) -> String {
    let units = raw
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]));
    char::decode_utf16(units)
        .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect()
}

pub fn put_ucs2(out: &mut Vec<u8>, s: &str) {
    for unit in s.encode_utf16() {
        out.extend_from_slice(&unit.to_le_bytes());
    }
}

/// B_VARCHAR: a one-byte count of UTF-16 units, then the units (cut at 255).
pub fn put_b_varchar(out: &mut Vec<u8>, s: &str) {
    let units: Vec<u16> = s.encode_utf16().take(255).collect();
    out.push(units.len() as u8);
    for unit in units {
        out.extend_from_slice(&unit.to_le_bytes());
    }
}

/// US_VARCHAR: a two-byte count of UTF-16 units, then the units.
pub fn put_us_varchar(out: &mut Vec<u8>, s: &str) {
    let units: Vec<u16> = s.encode_utf16().take(u16::MAX as usize).collect();
    out.extend_from_slice(&(units.len() as u16).to_le_bytes());
    for unit in units {
        out.extend_from_slice(&unit.to_le_bytes());
    }
}

// Code page 1252's characters in 0x80..0x9F (the rest of 0x00..0xFF is Latin-1).
const CP1252_HIGH: [(u8, char); 27] = [
    (0x80, '€'),
    (0x82, '‚'),
    (0x83, 'ƒ'),
    (0x84, '„'),
    (0x85, '…'),
    (0x86, '†'),
    (0x87, '‡'),
    (0x88, 'ˆ'),
    (0x89, '‰'),
    (0x8A, 'Š'),
    (0x8B, '‹'),
    (0x8C, 'Œ'),
    (0x8E, 'Ž'),
    (0x91, '‘'),
    (0x92, '’'),
    (0x93, '“'),
    (0x94, '”'),
    (0x95, '•'),
    (0x96, '–'),
    (0x97, '—'),
    (0x98, '˜'),
    (0x99, '™'),
    (0x9A, 'š'),
    (0x9B, '›'),
    (0x9C, 'œ'),
    (0x9E, 'ž'),
    (0x9F, 'Ÿ'),
];

/// The string in code page 1252, or `None` if a character has no byte there.
pub fn to_cp1252(s: &str) -> Option<Vec<u8>> {
    s.chars()
        .map(|c| match c as u32 {
            0..=0x7F | 0xA0..=0xFF => Some(c as u32 as u8),
            _ => CP1252_HIGH.iter().find(|(_, ch)| *ch == c).map(|(b, _)| *b),
        })
        .collect()
}

pub fn from_cp1252(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| match b {
            0x80..=0x9F => CP1252_HIGH
                .iter()
                .find(|(byte, _)| *byte == b)
                .map(|(_, c)| *c)
                .unwrap_or(char::REPLACEMENT_CHARACTER),
            _ => char::from(b),
        })
        .collect()
}

/// SQL Server column types the server sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SqlType {
    TinyInt,
    SmallInt,
    Int,
    BigInt,
    Bit,
    Real,
    Float,
    Decimal {
        precision: u8,
        scale: u8,
    },
    /// Length in characters; `None` is NVARCHAR(MAX), sent as PLP.
    NVarChar(Option<u16>),
    /// Length in bytes; `None` is VARCHAR(MAX).
    VarChar(Option<u16>),
    VarBinary(Option<u16>),
    Date,
    DateTime,
    SmallDateTime,
    DateTime2,
}

/// A cell as SQLite returns it, before it takes its column's type.
#[derive(Clone, Debug, PartialEq)]
pub enum Cell {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

pub struct Column {
    pub name: String,
    pub ty: SqlType,
}

/// A reply under construction: tokens appended in order.
#[derive(Default)]
pub struct Tokens {
    pub buf: Vec<u8>,
}

impl Tokens {
    pub fn done(&mut self, token: u8, status: u16, cur_cmd: u16, rows: u64) {
        self.buf.push(token);
        self.buf.extend_from_slice(&status.to_le_bytes());
        self.buf.extend_from_slice(&cur_cmd.to_le_bytes());
        self.buf.extend_from_slice(&rows.to_le_bytes());
    }

    pub fn return_status(&mut self, value: i32) {
        self.buf.push(0x79);
        self.buf.extend_from_slice(&value.to_le_bytes());
    }

    /// ERROR (0xAA) or INFO (0xAB).
    pub fn message(&mut self, token: u8, number: i32, class: u8, text: &str) {
        let mut body = Vec::new();
        body.extend_from_slice(&number.to_le_bytes());
        body.push(1); // state
        body.push(class);
        // Kept short so the token's two-byte length always holds it.
        let text: String = text.chars().take(2000).collect();
        put_us_varchar(&mut body, &text);
        put_b_varchar(&mut body, "escr-tds-test");
        put_b_varchar(&mut body, ""); // procedure
        body.extend_from_slice(&1i32.to_le_bytes()); // line
        self.buf.push(token);
        self.buf
            .extend_from_slice(&(body.len() as u16).to_le_bytes());
        self.buf.extend_from_slice(&body);
    }

    pub fn error(&mut self, number: i32, class: u8, text: &str) {
        self.message(0xAA, number, class, text);
    }

    /// ENVCHANGE with B_VARCHAR new/old values (database, language, packet size).
    pub fn env_change_text(&mut self, kind: u8, new: &str, old: &str) {
        let mut body = vec![kind];
        put_b_varchar(&mut body, new);
        put_b_varchar(&mut body, old);
        self.env_change(&body);
    }

    /// ENVCHANGE with B_VARBYTE new/old values (collation).
    pub fn env_change_bytes(&mut self, kind: u8, new: &[u8], old: &[u8]) {
        let mut body = vec![kind, new.len() as u8];
        body.extend_from_slice(new);
        body.push(old.len() as u8);
        body.extend_from_slice(old);
        self.env_change(&body);
    }

    fn env_change(&mut self, body: &[u8]) {
        self.buf.push(0xE3);
        self.buf
            .extend_from_slice(&(body.len() as u16).to_le_bytes());
        self.buf.extend_from_slice(body);
    }

    /// LOGINACK for TDS 7.4; the TDS version goes big-endian, the program version as
    /// major, minor, build high, build low.
    pub fn login_ack(&mut self, program: &str) {
        let mut body = vec![1u8]; // interface: T-SQL
        body.extend_from_slice(&0x7400_0004u32.to_be_bytes());
        put_b_varchar(&mut body, program);
        body.extend_from_slice(&[16, 0, 0, 1]);
        self.buf.push(0xAD);
        self.buf
            .extend_from_slice(&(body.len() as u16).to_le_bytes());
        self.buf.extend_from_slice(&body);
    }

    pub fn col_metadata(&mut self, columns: &[Column]) {
        self.buf.push(0x81);
        self.buf
            .extend_from_slice(&(columns.len() as u16).to_le_bytes());
        for column in columns {
            self.buf.extend_from_slice(&0u32.to_le_bytes()); // user type
            self.buf.extend_from_slice(&0x0001u16.to_le_bytes()); // nullable
            put_type_info(&mut self.buf, column.ty);
            put_b_varchar(&mut self.buf, &column.name);
        }
    }

    /// One row: ROW when every cell has a value, NBCROW (a null bitmap, NULLs left
    /// out) when some are NULL, as SQL Server does for wide sparse rows.
    pub fn row(&mut self, columns: &[Column], cells: &[Cell]) -> Result<(), String> {
        let any_null = cells.contains(&Cell::Null);
        if any_null {
            self.buf.push(0xD2);
            let mut bitmap = vec![0u8; columns.len().div_ceil(8)];
            for (i, cell) in cells.iter().enumerate() {
                if *cell == Cell::Null {
                    bitmap[i / 8] |= 1 << (i % 8);
                }
            }
            self.buf.extend_from_slice(&bitmap);
        } else {
            self.buf.push(0xD1);
        }
        for (column, cell) in columns.iter().zip(cells) {
            if any_null && *cell == Cell::Null {
                continue;
            }
            put_value(&mut self.buf, column.ty, cell)
                .map_err(|e| format!("column {}: {e}", column.name))?;
        }
        Ok(())
    }
}

fn put_type_info(out: &mut Vec<u8>, ty: SqlType) {
    match ty {
        SqlType::TinyInt => out.extend_from_slice(&[0x26, 1]),
        SqlType::SmallInt => out.extend_from_slice(&[0x26, 2]),
        SqlType::Int => out.extend_from_slice(&[0x26, 4]),
        SqlType::BigInt => out.extend_from_slice(&[0x26, 8]),
        SqlType::Bit => out.extend_from_slice(&[0x68, 1]),
        SqlType::Real => out.extend_from_slice(&[0x6D, 4]),
        SqlType::Float => out.extend_from_slice(&[0x6D, 8]),
        SqlType::Decimal { precision, scale } => {
            out.extend_from_slice(&[0x6A, decimal_len(precision), precision, scale])
        }
        SqlType::NVarChar(len) => {
            out.push(0xE7);
            out.extend_from_slice(&len.map_or(0xFFFF, |n| n.saturating_mul(2)).to_le_bytes());
            out.extend_from_slice(&COLLATION);
        }
        SqlType::VarChar(len) => {
            out.push(0xA7);
            out.extend_from_slice(&len.unwrap_or(0xFFFF).to_le_bytes());
            out.extend_from_slice(&COLLATION);
        }
        SqlType::VarBinary(len) => {
            out.push(0xA5);
            out.extend_from_slice(&len.unwrap_or(0xFFFF).to_le_bytes());
        }
        SqlType::Date => out.push(0x28),
        SqlType::DateTime => out.extend_from_slice(&[0x6F, 8]),
        SqlType::SmallDateTime => out.extend_from_slice(&[0x6F, 4]),
        SqlType::DateTime2 => out.extend_from_slice(&[0x2A, 7]),
    }
}

/// Bytes of a DECIMAL value on the wire (sign byte included) for a precision.
fn decimal_len(precision: u8) -> u8 {
    match precision {
        0..=9 => 5,
        10..=19 => 9,
        20..=28 => 13,
        _ => 17,
    }
}

/// NULL for a column outside NBCROW.
fn put_null(out: &mut Vec<u8>, ty: SqlType) {
    match ty {
        SqlType::NVarChar(None) | SqlType::VarChar(None) | SqlType::VarBinary(None) => {
            out.extend_from_slice(&u64::MAX.to_le_bytes())
        }
        SqlType::NVarChar(_) | SqlType::VarChar(_) | SqlType::VarBinary(_) => {
            out.extend_from_slice(&0xFFFFu16.to_le_bytes())
        }
        _ => out.push(0),
    }
}

fn put_value(out: &mut Vec<u8>, ty: SqlType, cell: &Cell) -> Result<(), String> {
    if *cell == Cell::Null {
        put_null(out, ty);
        return Ok(());
    }
    match ty {
        SqlType::TinyInt => {
            let v = u8::try_from(as_int(cell)?).map_err(|_| "out of range for tinyint")?;
            out.extend_from_slice(&[1, v]);
        }
        SqlType::SmallInt => {
            let v = i16::try_from(as_int(cell)?).map_err(|_| "out of range for smallint")?;
            out.push(2);
            out.extend_from_slice(&v.to_le_bytes());
        }
        SqlType::Int => {
            let v = i32::try_from(as_int(cell)?).map_err(|_| "out of range for int")?;
            out.push(4);
            out.extend_from_slice(&v.to_le_bytes());
        }
        SqlType::BigInt => {
            out.push(8);
            out.extend_from_slice(&as_int(cell)?.to_le_bytes());
        }
        SqlType::Bit => out.extend_from_slice(&[1, u8::from(as_int(cell)? != 0)]),
        SqlType::Real => {
            out.push(4);
            out.extend_from_slice(&(as_float(cell)? as f32).to_le_bytes());
        }
        SqlType::Float => {
            out.push(8);
            out.extend_from_slice(&as_float(cell)?.to_le_bytes());
        }
        SqlType::Decimal { precision, scale } => {
            let scaled = as_scaled_decimal(cell, scale)?;
            let magnitude = scaled.unsigned_abs();
            if magnitude >= 10u128.pow(u32::from(precision.min(38))) {
                return Err(format!("does not fit decimal({precision},{scale})"));
            }
            let len = decimal_len(precision);
            out.push(len);
            out.push(u8::from(scaled >= 0));
            out.extend_from_slice(&magnitude.to_le_bytes()[..usize::from(len) - 1]);
        }
        SqlType::NVarChar(len) => {
            let mut bytes = Vec::new();
            put_ucs2(&mut bytes, &as_text(cell));
            put_var(out, len, &bytes);
        }
        SqlType::VarChar(len) => {
            let bytes = to_cp1252(&as_text(cell)).ok_or("not representable in code page 1252")?;
            put_var(out, len, &bytes);
        }
        SqlType::VarBinary(len) => {
            let bytes = match cell {
                Cell::Blob(b) => b.clone(),
                other => as_text(other).into_bytes(),
            };
            put_var(out, len, &bytes);
        }
        SqlType::Date => {
            out.push(3);
            put_days(out, as_datetime(cell)?.date());
        }
        SqlType::DateTime2 => {
            let t = as_datetime(cell)?;
            out.push(8);
            let ticks = u64::from(t.time().num_seconds_from_midnight()) * 10_000_000
                + u64::from(t.time().nanosecond() / 100);
            out.extend_from_slice(&ticks.to_le_bytes()[..5]);
            put_days(out, t.date());
        }
        SqlType::DateTime => {
            let t = as_datetime(cell)?;
            let base = NaiveDate::from_ymd_opt(1900, 1, 1).ok_or("calendar")?;
            let days = i32::try_from((t.date() - base).num_days()).map_err(|_| "out of range")?;
            let millis = u64::from(t.time().num_seconds_from_midnight()) * 1000
                + u64::from(t.time().nanosecond() / 1_000_000);
            // datetime counts 1/300 s.
            let ticks = ((millis * 300 + 500) / 1000) as u32;
            out.push(8);
            out.extend_from_slice(&days.to_le_bytes());
            out.extend_from_slice(&ticks.to_le_bytes());
        }
        SqlType::SmallDateTime => {
            let t = as_datetime(cell)?;
            let base = NaiveDate::from_ymd_opt(1900, 1, 1).ok_or("calendar")?;
            let days = u16::try_from((t.date() - base).num_days()).map_err(|_| "out of range")?;
            let minutes = (t.time().num_seconds_from_midnight() / 60) as u16;
            out.push(4);
            out.extend_from_slice(&days.to_le_bytes());
            out.extend_from_slice(&minutes.to_le_bytes());
        }
    }
    Ok(())
}

/// A variable-length value: two-byte length, or PLP chunks for the MAX types.
fn put_var(out: &mut Vec<u8>, len: Option<u16>, bytes: &[u8]) {
    match len {
        Some(_) => {
            out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
            out.extend_from_slice(bytes);
        }
        None => {
            out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
            // Several chunks, as a server streaming a long value would send them.
            for chunk in bytes.chunks(4000) {
                out.extend_from_slice(&(chunk.len() as u32).to_le_bytes());
                out.extend_from_slice(chunk);
            }
            out.extend_from_slice(&0u32.to_le_bytes());
        }
    }
}

fn put_days(out: &mut Vec<u8>, date: NaiveDate) {
    let days = date.num_days_from_ce() - 1; // days since 0001-01-01
    out.extend_from_slice(&(days as u32).to_le_bytes()[..3]);
}

use chrono::Datelike;

fn as_int(cell: &Cell) -> Result<i64, String> {
    match cell {
        Cell::Int(i) => Ok(*i),
        Cell::Real(f) if f.fract() == 0.0 && f.abs() < 9.2e18 => Ok(*f as i64),
        Cell::Text(s) => s.trim().parse().map_err(|_| "not an integer".to_string()),
        _ => Err("not an integer".to_string()),
    }
}

fn as_float(cell: &Cell) -> Result<f64, String> {
    match cell {
        Cell::Int(i) => Ok(*i as f64),
        Cell::Real(f) => Ok(*f),
        Cell::Text(s) => s.trim().parse().map_err(|_| "not a number".to_string()),
        _ => Err("not a number".to_string()),
    }
}

/// The value times 10^scale, exactly for decimal text and rounded for floats.
fn as_scaled_decimal(cell: &Cell, scale: u8) -> Result<i128, String> {
    let text = match cell {
        Cell::Int(i) => i.to_string(),
        Cell::Real(f) => format!("{:.*}", usize::from(scale), f),
        Cell::Text(s) => s.trim().to_string(),
        Cell::Blob(_) | Cell::Null => return Err("not a number".to_string()),
    };
    parse_decimal(&text, scale).ok_or_else(|| "not a decimal number".to_string())
}

pub fn parse_decimal(text: &str, scale: u8) -> Option<i128> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty() && frac.is_empty() {
        return None;
    }
    if !whole
        .chars()
        .chain(frac.chars())
        .all(|c| c.is_ascii_digit())
    {
        return None;
    }
    let scale = usize::from(scale);
    let mut frac_digits: String = frac.chars().take(scale).collect();
    let round_up = frac.chars().nth(scale).is_some_and(|c| c >= '5');
    while frac_digits.len() < scale {
        frac_digits.push('0');
    }
    let joined = format!(
        "{}{}",
        if whole.is_empty() { "0" } else { whole },
        frac_digits
    );
    let mut value: i128 = joined.parse().ok()?;
    if round_up {
        value = value.checked_add(1)?;
    }
    Some(if negative { -value } else { value })
}

fn as_text(cell: &Cell) -> String {
    match cell {
        Cell::Null => String::new(),
        Cell::Int(i) => i.to_string(),
        Cell::Real(f) => f.to_string(),
        Cell::Text(s) => s.clone(),
        Cell::Blob(b) => String::from_utf8_lossy(b).into_owned(),
    }
}

fn as_datetime(cell: &Cell) -> Result<NaiveDateTime, String> {
    match cell {
        Cell::Text(s) => parse_datetime(s).ok_or_else(|| "not a date or time".to_string()),
        _ => Err("not a date or time".to_string()),
    }
}

/// The textual dates SQLite stores: `YYYY-MM-DD`, with ` HH:MM:SS[.f]` or `T...`.
pub fn parse_datetime(s: &str) -> Option<NaiveDateTime> {
    let s = s.trim();
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Some(d.and_time(NaiveTime::MIN));
    }
    [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
    ]
    .iter()
    .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
}

/// How SQLite should store a date parameter so it compares equal to stored text.
pub fn format_datetime(t: NaiveDateTime) -> String {
    if t.nanosecond() == 0 {
        t.format("%Y-%m-%d %H:%M:%S").to_string()
    } else {
        t.format("%Y-%m-%d %H:%M:%S%.f").to_string()
    }
}

pub fn date_from_days(days: u32) -> Option<NaiveDate> {
    NaiveDate::from_num_days_from_ce_opt(i32::try_from(days).ok()?.checked_add(1)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_parse_exactly_and_round_half_up() {
        assert_eq!(parse_decimal("1234.5", 2), Some(123450));
        assert_eq!(parse_decimal("-0.125", 2), Some(-13));
        assert_eq!(parse_decimal("7", 0), Some(7));
        assert_eq!(parse_decimal("x", 0), None);
        assert_eq!(parse_decimal(".", 0), None);
    }

    #[test]
    fn cp1252_round_trips_and_refuses_what_it_lacks() {
        let bytes = to_cp1252("Siân €5").unwrap();
        assert_eq!(from_cp1252(&bytes), "Siân €5");
        assert!(to_cp1252("王").is_none());
    }
}
