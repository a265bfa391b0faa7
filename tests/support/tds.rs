//! A small TDS server over SQLite, so the SQL Server connector (and any other TDS client)
//! can be tested where no SQL Server can run.
//!
//! Written from MS-TDS for TDS 7.4: PRELOGIN (answered ENCRYPT_NOT_SUP), LOGIN7
//! (LOGINACK + ENVCHANGE database / collation / packet size), SQL batches and RPC
//! `sp_executesql` with typed parameters, answered with COLMETADATA / ROW / NBCROW /
//! DONE tokens computed by SQLite; ERROR tokens for failed statements; attention
//! (cancel) packets; multi-packet messages both ways. Column types come from the
//! declared SQLite column type (`INT`, `DECIMAL(10,2)`, `NVARCHAR(50)`, `DATE`,
//! `DATETIME2`, ...) and, for expressions, from the values. Fault switches: a delay
//! before every statement, refused logins, a required password, stop and restart.

mod sql;
mod wire;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{NaiveDate, NaiveDateTime, NaiveTime};
use rusqlite::types::{Value as SqliteValue, ValueRef};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};

use sql::Translated;
use wire::{Cell, Column, Message, Reader, SqlType, Tokens, WireResult};

/// Largest request the server accepts (a 2,000-key statement is ~60 KB).
const MAX_MESSAGE: usize = 8 << 20;

struct Shared {
    db: Mutex<rusqlite::Connection>,
    delay_ms: AtomicU64,
    refuse_logins: AtomicBool,
    /// `(user, password)` a login must match; `None` accepts any.
    credentials: Mutex<Option<(String, String)>>,
    requests: AtomicU64,
    max_params: AtomicUsize,
    logins: AtomicU64,
}

/// The running server. Dropping it stops it.
pub struct TdsTestServer {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl TdsTestServer {
    /// Listens on 127.0.0.1 (a free port) and serves `db`.
    pub async fn start(db: rusqlite::Connection) -> TdsTestServer {
        let shared = Arc::new(Shared {
            db: Mutex::new(db),
            delay_ms: AtomicU64::new(0),
            refuse_logins: AtomicBool::new(false),
            credentials: Mutex::new(None),
            requests: AtomicU64::new(0),
            max_params: AtomicUsize::new(0),
            logins: AtomicU64::new(0),
        });
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the TDS test server");
        let addr = listener.local_addr().expect("local address");
        let accept = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        TdsTestServer {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Every statement waits this long before it runs (an attention cuts it short).
    pub fn set_delay(&self, delay: Duration) {
        self.shared
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Answer every login with error 18456 (login failed).
    pub fn refuse_logins(&self, refuse: bool) {
        self.shared.refuse_logins.store(refuse, Ordering::SeqCst);
    }

    /// Only this user and password may log in (by default any login is accepted).
    pub fn require_login(&self, user: &str, password: &str) {
        *lock(&self.shared.credentials) = Some((user.to_string(), password.to_string()));
    }

    /// SQL batches and RPC requests received.
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Most values bound to one statement so far.
    pub fn max_params(&self) -> usize {
        self.shared.max_params.load(Ordering::SeqCst)
    }

    /// Successful logins (new connections) so far.
    pub fn logins(&self) -> u64 {
        self.shared.logins.load(Ordering::SeqCst)
    }

    /// Runs `f` on the database, e.g. to add rows between statements.
    pub fn with_db<R>(&self, f: impl FnOnce(&rusqlite::Connection) -> R) -> R {
        f(&lock(&self.shared.db))
    }

    /// Closes the listener and every open connection, as a server going down does.
    pub async fn stop(&mut self) {
        if let Some(accept) = self.accept.take() {
            accept.abort();
            // Wait until the listener is really closed, so the port can be bound again.
            let _ = accept.await;
        }
    }

    /// Listens again on the same port (after [`TdsTestServer::stop`]); the database and
    /// the switches are kept.
    pub async fn restart(&mut self) {
        self.stop().await;
        let listener = TcpListener::bind(self.addr)
            .await
            .expect("bind the TDS test server's port again");
        self.accept = Some(tokio::spawn(accept_loop(
            listener,
            Arc::clone(&self.shared),
        )));
    }
}

impl Drop for TdsTestServer {
    fn drop(&mut self) {
        if let Some(accept) = self.accept.take() {
            accept.abort();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Owns the sessions: when this task is aborted its `JoinSet` aborts them all, which
/// closes their sockets.
async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut sessions = JoinSet::new();
    let mut spid: u16 = 50;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    spid = spid.checked_add(1).unwrap_or(51);
                    sessions.spawn(session(stream, Arc::clone(&shared), spid));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
        }
    }
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[derive(PartialEq)]
enum Phase {
    PreLogin,
    Login,
    Ready,
}

struct Session {
    shared: Arc<Shared>,
    out: OwnedWriteHalf,
    spid: u16,
    packet_size: usize,
    /// Attention packets seen by the reader / answered here. More seen than answered
    /// means the client wants the statement in progress cancelled.
    attention_seen: watch::Receiver<u64>,
    attention_answered: u64,
}

async fn session(stream: TcpStream, shared: Arc<Shared>, spid: u16) {
    let _ = stream.set_nodelay(true);
    let (mut rd, wr) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Message>(16);
    let (attn_tx, attn_rx) = watch::channel(0u64);
    // Reading runs apart from answering so an attention can arrive while a slow
    // statement is under way.
    let _reader = AbortOnDrop(tokio::spawn(async move {
        let mut seen = 0u64;
        while let Ok(Some(message)) = wire::read_message(&mut rd, MAX_MESSAGE).await {
            if message.kind == wire::PKT_ATTENTION {
                seen += 1;
                let _ = attn_tx.send(seen);
            }
            if tx.send(message).await.is_err() {
                break;
            }
        }
    }));
    let mut s = Session {
        shared,
        out: wr,
        spid,
        packet_size: 4096,
        attention_seen: attn_rx,
        attention_answered: 0,
    };
    let mut phase = Phase::PreLogin;
    while let Some(message) = rx.recv().await {
        let keep_going = match (message.kind, &phase) {
            (wire::PKT_PRELOGIN, Phase::PreLogin) => {
                phase = Phase::Login;
                s.send(&prelogin_reply()).await
            }
            (wire::PKT_LOGIN7, Phase::PreLogin | Phase::Login) => {
                let ok = s.login(&message.payload).await;
                phase = Phase::Ready;
                ok
            }
            (wire::PKT_SQL_BATCH | wire::PKT_RPC, Phase::Ready) => s.request(&message).await,
            (wire::PKT_ATTENTION, _) => {
                s.attention_answered += 1;
                let mut t = Tokens::default();
                t.done(wire::TOKEN_DONE, wire::DONE_ATTN, 0, 0);
                s.send(&t.buf).await
            }
            // Anything else (TLS bytes, a request before login) ends the connection,
            // as SQL Server does.
            _ => false,
        };
        if !keep_going {
            break;
        }
    }
}

/// PRELOGIN reply: version 16.0, no encryption, no instance, no MARS.
fn prelogin_reply() -> Vec<u8> {
    let options: [(u8, Vec<u8>); 5] = [
        (0x00, vec![16, 0, 0, 1, 0, 0]), // VERSION + sub-build
        (0x01, vec![0x02]),              // ENCRYPTION: ENCRYPT_NOT_SUP
        (0x02, vec![0x00]),              // INSTOPT: default instance
        (0x03, vec![]),                  // THREADID: empty from a server
        (0x04, vec![0x00]),              // MARS off
    ];
    let table_len = options.len() * 5 + 1;
    let mut table = Vec::new();
    let mut data = Vec::new();
    for (token, value) in &options {
        table.push(*token);
        table.extend_from_slice(&((table_len + data.len()) as u16).to_be_bytes());
        table.extend_from_slice(&(value.len() as u16).to_be_bytes());
        data.extend_from_slice(value);
    }
    table.push(0xFF);
    table.extend_from_slice(&data);
    table
}

struct Login {
    user: String,
    password: String,
    database: String,
    packet_size: u32,
}

/// LOGIN7 (MS-TDS 2.2.6.4): a fixed header, then offset/length pairs into the record.
fn parse_login(p: &[u8]) -> WireResult<Login> {
    let mut r = Reader::new(p);
    let _length = r.u32_le()?;
    let _tds_version = r.u32_le()?;
    let packet_size = r.u32_le()?;
    r.bytes(24)?; // program version, pid, connection id, flags, time zone, LCID
    let mut fields = Vec::new();
    for _ in 0..9 {
        let offset = usize::from(r.u16_le()?);
        let chars = usize::from(r.u16_le()?);
        fields.push((offset, chars));
    }
    let text = |(offset, chars): (usize, usize)| Reader::at(p, offset).ucs2(chars);
    let (pw_offset, pw_chars) = fields[2];
    let raw = Reader::at(p, pw_offset).bytes(pw_chars * 2)?;
    // Each password byte is nibble-swapped and XORed with 0xA5: undo both.
    let clear: Vec<u8> = raw.iter().map(|b| (b ^ 0xA5).rotate_left(4)).collect();
    Ok(Login {
        user: text(fields[1])?,
        password: wire::utf16_to_string(&clear),
        database: text(fields[8])?,
        packet_size,
    })
}

/// A parsed SQL batch or `sp_executesql` call.
struct Request {
    sql: String,
    params: Vec<Param>,
    rpc: bool,
}

struct Param {
    /// With its `@`, as declared; empty when the client sent it unnamed.
    name: String,
    value: SqliteValue,
}

/// Why a request cannot run: the wire is broken (close the connection) or the server
/// answers with an ERROR token.
enum Refusal {
    Wire(String),
    Error(i32, String),
}

impl From<String> for Refusal {
    fn from(e: String) -> Self {
        Refusal::Wire(e)
    }
}

impl Session {
    async fn send(&mut self, payload: &[u8]) -> bool {
        wire::write_message(&mut self.out, payload, self.packet_size, self.spid)
            .await
            .is_ok()
    }

    async fn login(&mut self, payload: &[u8]) -> bool {
        let Ok(login) = parse_login(payload) else {
            return false;
        };
        let mut t = Tokens::default();
        let wanted = lock(&self.shared.credentials).clone();
        let refused = self.shared.refuse_logins.load(Ordering::SeqCst)
            || wanted.is_some_and(|(u, p)| u != login.user || p != login.password);
        if refused {
            t.error(
                18456,
                14,
                &format!("Login failed for user '{}'.", login.user),
            );
            t.done(wire::TOKEN_DONE, wire::DONE_ERROR, 0, 0);
            self.send(&t.buf).await;
            return false;
        }
        self.packet_size = (login.packet_size as usize).clamp(512, 32767);
        let database = if login.database.is_empty() {
            "master".to_string()
        } else {
            login.database
        };
        t.env_change_text(1, &database, "master");
        t.message(
            0xAB,
            5701,
            0,
            &format!("Changed database context to '{database}'."),
        );
        t.env_change_bytes(7, &wire::COLLATION, &[]);
        t.login_ack("escr TDS test server");
        let size = self.packet_size.to_string();
        t.env_change_text(4, &size, &size);
        t.done(wire::TOKEN_DONE, wire::DONE_FINAL, 0, 0);
        self.shared.logins.fetch_add(1, Ordering::SeqCst);
        self.send(&t.buf).await
    }

    async fn request(&mut self, message: &Message) -> bool {
        self.shared.requests.fetch_add(1, Ordering::SeqCst);
        let rpc = message.kind == wire::PKT_RPC;
        let request = if rpc {
            parse_rpc(&message.payload)
        } else {
            parse_batch(&message.payload)
        };
        let request = match request {
            Ok(r) => r,
            Err(Refusal::Wire(e)) => {
                // Shown with the failing test's output; the client sees the socket close.
                eprintln!("TDS test server: malformed request, closing the connection: {e}");
                return false;
            }
            Err(Refusal::Error(number, text)) => {
                let reply = error_reply(rpc, number, &text);
                return self.send(&reply).await;
            }
        };
        self.shared
            .max_params
            .fetch_max(request.params.len(), Ordering::SeqCst);

        let delay = Duration::from_millis(self.shared.delay_ms.load(Ordering::SeqCst));
        if !delay.is_zero() {
            let answered = self.attention_answered;
            let mut seen = self.attention_seen.clone();
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                // Cancelled: the attention message itself is answered when it is read.
                _ = seen.wait_for(|n| *n > answered) => return true,
            }
        }

        let shared = Arc::clone(&self.shared);
        let outcome = tokio::task::spawn_blocking(move || {
            let db = lock(&shared.db);
            execute(&db, &request)
        })
        .await;
        let reply = match outcome {
            Ok(Ok(reply)) => reply,
            Ok(Err((number, text))) => error_reply(rpc, number, &text),
            Err(_) => error_reply(rpc, 50000, "internal error in the test server"),
        };
        self.send(&reply).await
    }
}

fn error_reply(rpc: bool, number: i32, text: &str) -> Vec<u8> {
    let mut t = Tokens::default();
    t.error(number, 16, text);
    if rpc {
        t.return_status(1);
        t.done(wire::TOKEN_DONEPROC, wire::DONE_ERROR, 0, 0);
    } else {
        t.done(wire::TOKEN_DONE, wire::DONE_ERROR, 0, 0);
    }
    t.buf
}

/// Skips ALL_HEADERS (transaction descriptor and the like), present since TDS 7.2.
fn skip_all_headers(r: &mut Reader<'_>) -> WireResult<()> {
    let total = r.u32_le()? as usize;
    if total < 4 {
        return Err("ALL_HEADERS shorter than its length field".to_string());
    }
    r.bytes(total - 4)?;
    Ok(())
}

fn parse_batch(p: &[u8]) -> Result<Request, Refusal> {
    let mut r = Reader::new(p);
    skip_all_headers(&mut r)?;
    let text = r.bytes(r.remaining())?;
    Ok(Request {
        sql: wire::utf16_to_string(text),
        params: Vec::new(),
        rpc: false,
    })
}

fn parse_rpc(p: &[u8]) -> Result<Request, Refusal> {
    let mut r = Reader::new(p);
    skip_all_headers(&mut r)?;
    let name_len = r.u16_le()?;
    if name_len == 0xFFFF {
        let proc_id = r.u16_le()?;
        if proc_id != 10 {
            return Err(Refusal::Error(
                2812,
                format!(
                    "The test server runs only sp_executesql (ProcID 10), not ProcID {proc_id}."
                ),
            ));
        }
    } else {
        let name = r.ucs2(usize::from(name_len))?;
        let bare = name.rsplit('.').next().unwrap_or("");
        if !bare.eq_ignore_ascii_case("sp_executesql") {
            return Err(Refusal::Error(
                2812,
                format!("Could not find stored procedure '{name}'."),
            ));
        }
    }
    let _options = r.u16_le()?;
    let mut params = Vec::new();
    while r.remaining() > 0 {
        let name = r.b_varchar()?;
        let _status = r.u8()?;
        let value = read_value(&mut r)?;
        params.push(Param { name, value });
    }
    let mut params = params.into_iter();
    let sql = match params.next().map(|p| p.value) {
        Some(SqliteValue::Text(sql)) => sql,
        _ => {
            return Err(Refusal::Error(
                214,
                "Procedure expects parameter '@statement' of type 'ntext/nchar/nvarchar'."
                    .to_string(),
            ))
        }
    };
    let declared = match params.next().map(|p| p.value) {
        Some(SqliteValue::Text(d)) => declared_names(&d),
        _ => Vec::new(),
    };
    let mut values: Vec<Param> = params.collect();
    for (i, param) in values.iter_mut().enumerate() {
        if param.name.is_empty() {
            param.name = declared.get(i).cloned().unwrap_or_default();
        }
    }
    Ok(Request {
        sql,
        params: values,
        rpc: true,
    })
}

/// `@P1 int, @P2 decimal(10,2)` -> `["@P1", "@P2"]`.
fn declared_names(declaration: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    let mut push = |part: &str| {
        if let Some(name) = part.split_whitespace().next() {
            names.push(name.to_string());
        }
    };
    for (i, c) in declaration.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                push(&declaration[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    push(&declaration[start..]);
    names
}

/// One parameter value: TYPE_INFO then the value (MS-TDS 2.2.5.4, 2.2.5.5).
fn read_value(r: &mut Reader<'_>) -> Result<SqliteValue, Refusal> {
    let ty = r.u8()?;
    let value = match ty {
        0x1F => SqliteValue::Null,
        // Fixed-length types.
        0x30 => SqliteValue::Integer(r.u8()?.into()),
        0x32 => SqliteValue::Integer(i64::from(r.u8()? != 0)),
        0x34 => SqliteValue::Integer(i16::from_le_bytes(arr(r.bytes(2)?)).into()),
        0x38 => SqliteValue::Integer(i32::from_le_bytes(arr(r.bytes(4)?)).into()),
        0x7F => SqliteValue::Integer(i64::from_le_bytes(arr(r.bytes(8)?))),
        0x3B => SqliteValue::Real(f32::from_le_bytes(arr(r.bytes(4)?)).into()),
        0x3E => SqliteValue::Real(f64::from_le_bytes(arr(r.bytes(8)?))),
        0x3D | 0x3A | 0x3C | 0x7A => {
            let len = if ty == 0x3D || ty == 0x3C { 8 } else { 4 };
            fixed_len_value(ty, r.bytes(len)?)?
        }
        // Types with a length byte: INTN, BITN, FLTN, DATETIMN, MONEYN, GUID.
        0x26 | 0x68 | 0x6D | 0x6F | 0x6E | 0x24 => {
            let _max = r.u8()?;
            let len = usize::from(r.u8()?);
            if len == 0 {
                SqliteValue::Null
            } else {
                let data = r.bytes(len)?;
                match (ty, len) {
                    (0x26, 1) => SqliteValue::Integer(data[0].into()),
                    (0x26, 2) => SqliteValue::Integer(i16::from_le_bytes(arr(data)).into()),
                    (0x26, 4) => SqliteValue::Integer(i32::from_le_bytes(arr(data)).into()),
                    (0x26, 8) => SqliteValue::Integer(i64::from_le_bytes(arr(data))),
                    (0x68, 1) => SqliteValue::Integer(i64::from(data[0] != 0)),
                    (0x6D, 4) => SqliteValue::Real(f32::from_le_bytes(arr(data)).into()),
                    (0x6D, 8) => SqliteValue::Real(f64::from_le_bytes(arr(data))),
                    (0x6F, 8) => fixed_len_value(0x3D, data)?,
                    (0x6F, 4) => fixed_len_value(0x3A, data)?,
                    (0x6E, 8) => fixed_len_value(0x3C, data)?,
                    (0x6E, 4) => fixed_len_value(0x7A, data)?,
                    (0x24, 16) => SqliteValue::Text(guid_text(data)),
                    _ => return Err(Refusal::Wire(format!("type {ty:#x} with length {len}"))),
                }
            }
        }
        // DECIMALN, NUMERICN: precision and scale, then sign and magnitude.
        0x6A | 0x6C => {
            let _max = r.u8()?;
            let _precision = r.u8()?;
            let scale = r.u8()?;
            let len = usize::from(r.u8()?);
            if len == 0 {
                SqliteValue::Null
            } else {
                let data = r.bytes(len)?;
                if len > 17 {
                    return Err(Refusal::Wire("decimal longer than 17 bytes".into()));
                }
                let mut magnitude = [0u8; 16];
                magnitude[..len - 1].copy_from_slice(&data[1..]);
                let m = u128::from_le_bytes(magnitude) as f64;
                let v = m / 10f64.powi(i32::from(scale));
                SqliteValue::Real(if data[0] == 0 { -v } else { v })
            }
        }
        0x28 => match r.u8()? {
            0 => SqliteValue::Null,
            3 => {
                let date = days(r.bytes(3)?)?;
                SqliteValue::Text(date.format("%Y-%m-%d").to_string())
            }
            _ => return Err(Refusal::Wire("date with a length other than 3".into())),
        },
        // TIMEN, DATETIME2N, DATETIMEOFFSETN: a scale, then time (and date, offset).
        0x29..=0x2B => {
            let scale = r.u8()?;
            let len = usize::from(r.u8()?);
            if len == 0 {
                SqliteValue::Null
            } else {
                let data = r.bytes(len)?;
                time_value(ty, scale, data)?
            }
        }
        // NVARCHAR, NCHAR, VARCHAR, CHAR: max length, collation, then the text.
        0xE7 | 0xEF | 0xA7 | 0xAF => {
            let max = r.u16_le()?;
            r.bytes(5)?;
            match var_bytes(r, max)? {
                None => SqliteValue::Null,
                Some(bytes) if ty == 0xE7 || ty == 0xEF => {
                    SqliteValue::Text(wire::utf16_to_string(&bytes))
                }
                Some(bytes) => SqliteValue::Text(wire::from_cp1252(&bytes)),
            }
        }
        // VARBINARY, BINARY.
        0xA5 | 0xAD => {
            let max = r.u16_le()?;
            var_bytes(r, max)?.map_or(SqliteValue::Null, SqliteValue::Blob)
        }
        other => {
            return Err(Refusal::Error(
                8016,
                format!("Parameter type {other:#04x} is not supported by the test server."),
            ))
        }
    };
    Ok(value)
}

fn arr<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    let n = N.min(bytes.len());
    out[..n].copy_from_slice(&bytes[..n]);
    out
}

/// A two-byte length (0xFFFF for NULL), or PLP chunks when the type is a MAX type.
fn var_bytes(r: &mut Reader<'_>, max: u16) -> WireResult<Option<Vec<u8>>> {
    if max != 0xFFFF {
        let len = r.u16_le()?;
        return Ok(if len == 0xFFFF {
            None
        } else {
            Some(r.bytes(usize::from(len))?.to_vec())
        });
    }
    let total = r.u64_le()?;
    if total == u64::MAX {
        return Ok(None);
    }
    let mut out = Vec::new();
    loop {
        let chunk = r.u32_le()? as usize;
        if chunk == 0 {
            return Ok(Some(out));
        }
        out.extend_from_slice(r.bytes(chunk)?);
    }
}

fn fixed_len_value(ty: u8, data: &[u8]) -> Result<SqliteValue, Refusal> {
    let base = NaiveDate::from_ymd_opt(1900, 1, 1).ok_or("calendar".to_string())?;
    let at = |days: i64, millis: i64| {
        base.and_time(NaiveTime::MIN)
            .checked_add_signed(chrono::Duration::days(days))
            .and_then(|d| d.checked_add_signed(chrono::Duration::milliseconds(millis)))
            .map(|t| SqliteValue::Text(wire::format_datetime(t)))
            .ok_or_else(|| Refusal::Wire("date out of range".to_string()))
    };
    match ty {
        0x3D => {
            let days = i32::from_le_bytes(arr(&data[..4]));
            let ticks = u32::from_le_bytes(arr(&data[4..]));
            // 1/300 s ticks to milliseconds, rounded as SQL Server does (.003, .007).
            at(days.into(), (i64::from(ticks) * 10 + 1) / 3)
        }
        0x3A => {
            let days = u16::from_le_bytes(arr(&data[..2]));
            let minutes = u16::from_le_bytes(arr(&data[2..]));
            at(days.into(), i64::from(minutes) * 60_000)
        }
        0x3C => {
            let high = i32::from_le_bytes(arr(&data[..4]));
            let low = u32::from_le_bytes(arr(&data[4..]));
            let units = (i64::from(high) << 32) | i64::from(low);
            Ok(SqliteValue::Real(units as f64 / 10_000.0))
        }
        _ => Ok(SqliteValue::Real(
            f64::from(i32::from_le_bytes(arr(data))) / 10_000.0,
        )),
    }
}

fn days(data: &[u8]) -> Result<NaiveDate, Refusal> {
    let n = u32::from_le_bytes([data[0], data[1], data[2], 0]);
    wire::date_from_days(n).ok_or_else(|| Refusal::Wire("date out of range".into()))
}

fn time_value(ty: u8, scale: u8, data: &[u8]) -> Result<SqliteValue, Refusal> {
    let time_len = match scale {
        0..=2 => 3,
        3..=4 => 4,
        5..=7 => 5,
        _ => return Err(Refusal::Wire("time scale above 7".into())),
    };
    if data.len() < time_len {
        return Err(Refusal::Wire("time value too short".into()));
    }
    let mut raw = [0u8; 8];
    raw[..time_len].copy_from_slice(&data[..time_len]);
    let units = u64::from_le_bytes(raw);
    let nanos = units.saturating_mul(10u64.pow(9 - u32::from(scale)));
    let time = NaiveTime::from_num_seconds_from_midnight_opt(
        (nanos / 1_000_000_000) as u32,
        (nanos % 1_000_000_000) as u32,
    )
    .ok_or_else(|| Refusal::Wire("time out of range".into()))?;
    if ty == 0x29 {
        return Ok(SqliteValue::Text(time.format("%H:%M:%S%.f").to_string()));
    }
    let rest = &data[time_len..];
    if rest.len() < 3 {
        return Err(Refusal::Wire("datetime2 value too short".into()));
    }
    // A datetimeoffset's date and time are in UTC already; its offset is left out.
    let t = NaiveDateTime::new(days(&rest[..3])?, time);
    Ok(SqliteValue::Text(wire::format_datetime(t)))
}

fn guid_text(d: &[u8]) -> String {
    // The first three groups are little-endian on the wire.
    format!(
        "{:02X}{:02X}{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}{:02X}{:02X}{:02X}{:02X}",
        d[3], d[2], d[1], d[0], d[5], d[4], d[7], d[6], d[8], d[9], d[10], d[11], d[12], d[13], d[14], d[15]
    )
}

/// Runs the request on SQLite and builds the whole reply.
fn execute(db: &rusqlite::Connection, request: &Request) -> Result<Vec<u8>, (i32, String)> {
    let sql = match sql::translate(&request.sql).map_err(|e| (102, e))? {
        Translated::NoOp => {
            let mut t = Tokens::default();
            finish(&mut t, request.rpc, wire::DONE_FINAL, 0, 0);
            return Ok(t.buf);
        }
        Translated::Sql(sql) => sql,
    };
    let mut stmt = db.prepare(&sql).map_err(sqlite_error)?;
    for index in 1..=stmt.parameter_count() {
        let value = match stmt.parameter_name(index) {
            Some(name) if !name.starts_with('?') => {
                let bare = &name[1..];
                request
                    .params
                    .iter()
                    .find(|p| p.name.trim_start_matches('@').eq_ignore_ascii_case(bare))
                    .map(|p| p.value.clone())
                    .ok_or_else(|| {
                        (
                            137,
                            format!("Must declare the scalar variable \"@{bare}\"."),
                        )
                    })?
            }
            positional => {
                let n = positional
                    .and_then(|n| n[1..].parse::<usize>().ok())
                    .unwrap_or(index);
                request
                    .params
                    .get(n.saturating_sub(1))
                    .map(|p| p.value.clone())
                    .ok_or_else(|| (8178, format!("Parameter {n} was not supplied.")))?
            }
        };
        stmt.raw_bind_parameter(index, value)
            .map_err(sqlite_error)?;
    }
    let names: Vec<String> = stmt.column_names().iter().map(|s| s.to_string()).collect();
    let declared: Vec<Option<String>> = stmt
        .columns()
        .iter()
        .map(|c| c.decl_type().map(str::to_string))
        .collect();
    let mut t = Tokens::default();
    if names.is_empty() {
        let changes = stmt.raw_execute().map_err(sqlite_error)?;
        finish(&mut t, request.rpc, wire::DONE_COUNT, 0xC3, changes as u64);
        return Ok(t.buf);
    }
    let mut rows = Vec::new();
    let mut cursor = stmt.raw_query();
    while let Some(row) = cursor.next().map_err(sqlite_error)? {
        let mut cells = Vec::with_capacity(names.len());
        for i in 0..names.len() {
            cells.push(match row.get_ref(i).map_err(sqlite_error)? {
                ValueRef::Null => Cell::Null,
                ValueRef::Integer(v) => Cell::Int(v),
                ValueRef::Real(v) => Cell::Real(v),
                ValueRef::Text(v) => Cell::Text(String::from_utf8_lossy(v).into_owned()),
                ValueRef::Blob(v) => Cell::Blob(v.to_vec()),
            });
        }
        rows.push(cells);
    }
    let columns: Vec<Column> = names
        .into_iter()
        .enumerate()
        .map(|(i, name)| Column {
            ty: column_type(declared[i].as_deref(), rows.iter().map(|r| &r[i])),
            name,
        })
        .collect();
    t.col_metadata(&columns);
    for row in &rows {
        t.row(&columns, row)
            .map_err(|e| (245, format!("Conversion failed: {e}.")))?;
    }
    finish(
        &mut t,
        request.rpc,
        wire::DONE_COUNT,
        0xC1,
        rows.len() as u64,
    );
    Ok(t.buf)
}

/// The closing tokens: DONE for a batch; DONEINPROC, RETURNSTATUS, DONEPROC for an RPC.
fn finish(t: &mut Tokens, rpc: bool, status: u16, cur_cmd: u16, rows: u64) {
    if rpc {
        if status & wire::DONE_COUNT != 0 {
            t.done(wire::TOKEN_DONEINPROC, status, cur_cmd, rows);
        }
        t.return_status(0);
        t.done(wire::TOKEN_DONEPROC, wire::DONE_FINAL, 0xE0, 0);
    } else {
        t.done(wire::TOKEN_DONE, status, cur_cmd, rows);
    }
}

/// SQLite's errors as the SQL Server errors a client would see for the same mistake.
fn sqlite_error(e: rusqlite::Error) -> (i32, String) {
    // SQLite's own message only: rusqlite's Display appends the whole statement.
    let text = match e {
        rusqlite::Error::SqlInputError { msg, .. } => msg,
        rusqlite::Error::SqliteFailure(_, Some(msg)) => msg,
        other => other.to_string(),
    };
    if let Some(table) = text.strip_prefix("no such table: ") {
        return (208, format!("Invalid object name '{table}'."));
    }
    if let Some(column) = text.strip_prefix("no such column: ") {
        return (207, format!("Invalid column name '{column}'."));
    }
    if let Some(rest) = text.strip_prefix("near \"") {
        let near = rest.split('"').next().unwrap_or("");
        return (102, format!("Incorrect syntax near '{near}'."));
    }
    (50000, text)
}

/// The SQL Server type of a result column: from its declared SQLite type when it has
/// one (widened if a value does not fit), else from the values.
fn column_type<'a>(
    declared: Option<&str>,
    cells: impl Iterator<Item = &'a Cell> + Clone,
) -> SqlType {
    let decl = declared.unwrap_or("").to_ascii_uppercase();
    let base = decl.split('(').next().unwrap_or("").trim().to_string();
    let args: Vec<u16> = decl
        .split_once('(')
        .map(|(_, a)| {
            a.trim_end_matches(')')
                .split(',')
                .filter_map(|n| n.trim().parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let is_max = decl.contains("(MAX)");
    let fits_i32 = cells.clone().all(|c| match c {
        Cell::Int(i) => i32::try_from(*i).is_ok(),
        _ => true,
    });
    let utf16_max = cells
        .clone()
        .map(|c| match c {
            Cell::Text(s) => s.encode_utf16().count(),
            Cell::Blob(b) => b.len(),
            _ => 0,
        })
        .max()
        .unwrap_or(0);
    let nvarchar = |declared_len: Option<u16>| {
        let len = declared_len.unwrap_or(4000).max(1);
        if is_max || utf16_max > 4000 || len > 4000 {
            SqlType::NVarChar(None)
        } else {
            SqlType::NVarChar(Some(len.max(utf16_max as u16)))
        }
    };
    match base.as_str() {
        "DATETIME2" => SqlType::DateTime2,
        "SMALLDATETIME" => SqlType::SmallDateTime,
        "DATETIME" | "TIMESTAMP" => SqlType::DateTime,
        "DATE" => SqlType::Date,
        "BIGINT" => SqlType::BigInt,
        "SMALLINT" => SqlType::SmallInt,
        "TINYINT" => SqlType::TinyInt,
        "BIT" | "BOOLEAN" | "BOOL" => SqlType::Bit,
        "INT" | "INTEGER" if fits_i32 => SqlType::Int,
        "INT" | "INTEGER" => SqlType::BigInt,
        "DECIMAL" | "NUMERIC" => SqlType::Decimal {
            precision: args.first().map_or(18, |p| (*p).clamp(1, 38) as u8),
            scale: args.get(1).map_or(0, |s| (*s).min(38) as u8),
        },
        "MONEY" => SqlType::Decimal {
            precision: 19,
            scale: 4,
        },
        "REAL" => SqlType::Real,
        "FLOAT" | "DOUBLE" => SqlType::Float,
        "NVARCHAR" | "NCHAR" | "NTEXT" => nvarchar(args.first().copied()),
        "VARCHAR" | "CHAR" | "TEXT" | "CLOB" => {
            let all_cp1252 = cells.clone().all(|c| match c {
                Cell::Text(s) => wire::to_cp1252(s).is_some(),
                _ => true,
            });
            if !all_cp1252 {
                nvarchar(None)
            } else {
                let len = args.first().copied().unwrap_or(8000).max(1);
                if is_max || utf16_max > 8000 || len > 8000 || base == "TEXT" {
                    SqlType::VarChar(None)
                } else {
                    SqlType::VarChar(Some(len.max(utf16_max as u16)))
                }
            }
        }
        "BLOB" | "BINARY" | "VARBINARY" | "IMAGE" => {
            if is_max || utf16_max > 8000 {
                SqlType::VarBinary(None)
            } else {
                SqlType::VarBinary(Some(8000))
            }
        }
        _ => {
            // An expression: the SQLite storage class of its values decides.
            let cells_all_numeric = cells
                .clone()
                .all(|c| matches!(c, Cell::Null | Cell::Int(_) | Cell::Real(_)));
            let mut kinds = cells.filter(|c| **c != Cell::Null).map(|c| match c {
                Cell::Int(_) => 0,
                Cell::Real(_) => 1,
                Cell::Text(_) => 2,
                _ => 3,
            });
            let numeric = cells_all_numeric;
            let first = kinds.next();
            let same = first.is_some_and(|k| kinds.all(|other| other == k));
            match (first, same) {
                (None, _) => SqlType::Int,
                (Some(0), true) if fits_i32 => SqlType::Int,
                (Some(0), true) => SqlType::BigInt,
                (Some(1), true) => SqlType::Float,
                (Some(0 | 1), false) if numeric => SqlType::Float,
                (Some(3), true) if utf16_max > 8000 => SqlType::VarBinary(None),
                (Some(3), true) => SqlType::VarBinary(Some(8000)),
                _ => nvarchar(None),
            }
        }
    }
}
