//! A bot's WebSocket without a task of its own: tungstenite's synchronous `WebSocket`
//! over a non-blocking socket that is not in the reactor. The session's media task
//! reads and writes it on its 20 ms tick (`sink::BotSink`) as it does a SIP leg's RTP:
//! no task or thread wake-up, channel or buffer copy per frame (with the socket in the
//! reactor, each message the bot sent woke a parked worker thread: half of a bot's
//! cost). The stream's task only opens it and closes it, polling the socket every few
//! milliseconds where the handshake or a last write would block.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::HandshakeError;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::stream::MaybeTlsStream;
use tokio_tungstenite::tungstenite::{self, Error, Message, WebSocket};

use crate::AppState;

/// Largest frame a bot may send (a second of μ-law is 8 KB; base64 and JSON add a
/// third).
const MAX_FRAME: usize = 1 << 20;
/// Bytes read from a bot's socket at a time (a 20 ms frame's message is under 1 KiB):
/// tungstenite zero-fills its read buffer up to this size on every read (128 KiB, its
/// default, was 9 % of the gateway's CPU with 50 bots).
const READ_BUFFER: usize = 4096;
/// What may wait for a bot slow to read (some 10 s of frames): beyond it a message is
/// dropped and counted, never held in memory.
pub const MAX_UNSENT: usize = 256 * 1024;
/// Opening the connection and the handshake, each.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the handshake and the last writes look at a socket that would block.
const POLL: Duration = Duration::from_millis(5);

/// What a bot's WebSocket runs over: the socket (with TLS for `wss://`), or, in unit
/// tests, a pipe.
pub trait Stream: Read + Write + Send {
    /// A tick begins: what came since the last one is read now.
    fn tick(&mut self) {}
}

/// The bot's socket, read once per tick: a read that returns less than asked for
/// emptied the socket, so the reads after it until the next tick would block without
/// asking the kernel (one `recv` per tick and bot, not two). At most `READ_BUDGET` bytes
/// are read per tick (a bot sending more waits for the next ticks: it cannot hold its
/// session's media task). Before the first tick (the handshake) every read asks.
pub struct Io {
    tcp: TcpStream,
    ticking: bool,
    drained: bool,
    budget: usize,
}

/// Bytes read from one bot per 20 ms tick at most: some 3 s of base64 μ-law, 150 times
/// real time (bots send ahead, not that far).
pub const READ_BUDGET: usize = 64 * 1024;

impl Io {
    fn new(tcp: TcpStream) -> Io {
        Io {
            tcp,
            ticking: false,
            drained: false,
            budget: READ_BUDGET,
        }
    }
}

impl Read for Io {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.drained || (self.ticking && self.budget == 0) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let want = if self.ticking {
            buf.len().min(self.budget)
        } else {
            buf.len()
        };
        let n = (&self.tcp).read(&mut buf[..want])?;
        if self.ticking {
            self.budget -= n;
            self.drained = n < want && n > 0;
        }
        Ok(n)
    }
}

impl Write for Io {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&self.tcp).write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Stream for Io {
    fn tick(&mut self) {
        self.ticking = true;
        self.drained = false;
        self.budget = READ_BUDGET;
    }
}

/// A tick begins for this WebSocket's stream.
pub fn tick(ws: &mut Ws) {
    match ws.get_mut() {
        MaybeTlsStream::Plain(s) => s.tick(),
        MaybeTlsStream::Rustls(s) => s.sock.tick(),
        _ => {}
    }
}

pub type Ws = WebSocket<MaybeTlsStream<Box<dyn Stream>>>;

/// A WebSocket over any stream, as after a handshake (unit tests).
pub fn over(stream: Box<dyn Stream>) -> Ws {
    WebSocket::from_raw_socket(
        MaybeTlsStream::Plain(stream),
        tungstenite::protocol::Role::Client,
        Some(config()),
    )
}

/// An open connection to a bot.
pub struct Link {
    pub ws: Ws,
}

/// A would-block error: try again when the socket is ready.
pub fn would_block(e: &Error) -> bool {
    matches!(e, Error::Io(e) if e.kind() == io::ErrorKind::WouldBlock)
}

fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_FRAME))
        .max_frame_size(Some(MAX_FRAME))
        .read_buffer_size(READ_BUFFER)
        .max_write_buffer_size(MAX_UNSENT)
}

/// Open the bot's WebSocket, to an address the egress policy allows (the name is
/// resolved once and the checked address is the one connected to).
pub async fn connect(
    app: &AppState,
    url: &str,
    headers: Option<&std::collections::BTreeMap<String, String>>,
) -> Result<Link, String> {
    let policy = &app.webhooks.egress;
    let u = policy.check_url_as(url, "mediaStream.url", &["ws", "wss"])?;
    let host = u.host_str().ok_or("no host")?;
    let port = u.port_or_known_default().ok_or("no port")?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addrs = policy.resolve(host, port).await?;
    let addr = addrs.first().ok_or("no address")?;
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| "connecting timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let _ = tcp.set_nodelay(true);
    // Out of the reactor, still non-blocking.
    let tcp: TcpStream = tcp.into_std().map_err(|e| e.to_string())?;
    tcp.set_nonblocking(true).map_err(|e| e.to_string())?;
    let mut request = url.into_client_request().map_err(|e| e.to_string())?;
    for (name, value) in headers.into_iter().flatten() {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| e.to_string())?;
        let value = HeaderValue::from_str(value).map_err(|e| e.to_string())?;
        request.headers_mut().insert(name, value);
    }
    let ws = tokio::time::timeout(CONNECT_TIMEOUT, handshake(tcp, request, None))
        .await
        .map_err(|_| "the WebSocket handshake timed out".to_string())??;
    Ok(Link { ws })
}

/// The WebSocket handshake (TLS first for `wss://`, with `connector`'s roots or the Web
/// PKI's) on a connected non-blocking socket.
async fn handshake(
    tcp: TcpStream,
    request: tungstenite::handshake::client::Request,
    connector: Option<tungstenite::Connector>,
) -> Result<Ws, String> {
    let io = Io::new(tcp);
    let mut step = tungstenite::client_tls_with_config(
        request,
        Box::new(io) as Box<dyn Stream>,
        Some(config()),
        connector,
    );
    loop {
        match step {
            Ok((ws, _)) => return Ok(ws),
            Err(HandshakeError::Failure(e)) => return Err(e.to_string()),
            Err(HandshakeError::Interrupted(mid)) => {
                tokio::time::sleep(POLL).await;
                step = mid.handshake();
            }
        }
    }
}

impl Link {
    /// Send messages, waiting for the socket where it is full (the opening messages, or
    /// the last ones before closing).
    pub async fn send_all(&mut self, messages: Vec<Message>) -> Result<(), String> {
        for m in messages {
            match self.ws.write(m) {
                Ok(()) => {}
                Err(e) if would_block(&e) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        self.flush(Duration::from_secs(5)).await
    }

    /// Write out what waits, for at most `limit`.
    pub async fn flush(&mut self, limit: Duration) -> Result<(), String> {
        let until = tokio::time::Instant::now() + limit;
        loop {
            match self.ws.flush() {
                Ok(()) => return Ok(()),
                Err(e) if would_block(&e) => {
                    if tokio::time::Instant::now() >= until {
                        return Err("the bot does not read".into());
                    }
                    tokio::time::sleep(POLL).await;
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    /// Close the WebSocket (a close frame, best effort within a second).
    pub async fn close(mut self) {
        let _ = self.ws.close(None);
        let _ = self.flush(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use base64::Engine;
    use futures_util::{SinkExt, StreamExt};
    use patchbay_conference::media::session::LegSink;
    use tokio::io::{AsyncRead, AsyncWrite};

    use super::*;
    use crate::streams::sink;

    fn tls_file(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/data/tls")
            .join(name)
    }

    /// A bot: sends three 20 ms frames of `0x11` and returns the events it received
    /// until two `media`.
    async fn bot<S: AsyncRead + AsyncWrite + Unpin>(stream: S) -> Vec<String> {
        let mut ws = tokio_tungstenite::accept_async(stream)
            .await
            .expect("handshake");
        let payload = base64::engine::general_purpose::STANDARD.encode([0x11u8; 160]);
        for _ in 0..3 {
            let m = serde_json::json!({"event": "media", "media": {"payload": payload}});
            ws.send(Message::text(m.to_string())).await.expect("send");
        }
        let mut got = Vec::new();
        while got
            .iter()
            .filter(|e: &&String| e.contains("\"media\""))
            .count()
            < 2
        {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => got.push(t.to_string()),
                Some(Ok(_)) => {}
                other => panic!("the bot's socket ended: {other:?}"),
            }
        }
        got
    }

    /// The session's side: a sink on the connection, ticked every 20 ms.
    async fn exchange(tls: bool) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            if tls {
                let files = patchbay_tls::TlsFiles {
                    cert: tls_file("server.pem"),
                    key: tls_file("server.key"),
                };
                let acceptor = patchbay_tls::TlsServer::new(files).unwrap().acceptor();
                bot(acceptor.accept(tcp).await.expect("TLS")).await
            } else {
                bot(tcp).await
            }
        });
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let tcp = tcp.into_std().unwrap();
        let scheme = if tls { "wss" } else { "ws" };
        let request = format!("{scheme}://localhost:{port}/bot")
            .into_client_request()
            .unwrap();
        let connector = tls.then(|| {
            let roots = patchbay_tls::client_config(Some(&tls_file("ca.pem"))).unwrap();
            tungstenite::Connector::Rustls(roots)
        });
        let ws = handshake(tcp, request, connector).await.expect("handshake");
        let sink = sink::twilio_for_tests();
        sink.attach(ws);
        sink.send_audio(&[0x22; 160], 160);
        sink.send_audio(&[0x33; 160], 160);
        let mut played = Vec::new();
        for _ in 0..100 {
            sink.drain(&mut |v| played.push(v.payload.to_vec()));
            if played.len() == 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            played,
            vec![vec![0x11u8; 160]; 3],
            "the bot's frames, one per tick"
        );
        let heard = server.await.unwrap();
        assert!(heard[0].contains(&base64::engine::general_purpose::STANDARD.encode([0x22u8; 160])));
        assert!(heard[1].contains(&base64::engine::general_purpose::STANDARD.encode([0x33u8; 160])));
    }

    #[tokio::test]
    async fn a_bot_sending_more_than_a_ticks_budget_is_read_over_several_ticks() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        // 10 s of audio in one message: about 107 KB of base64, over READ_BUDGET.
        let ulaw = vec![0x11u8; 80_000];
        let payload = base64::engine::general_purpose::STANDARD.encode(&ulaw);
        let message = serde_json::json!({"event": "media", "media": {"payload": payload}});
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut ws = tokio_tungstenite::accept_async(tcp)
                .await
                .expect("handshake");
            ws.send(Message::text(message.to_string()))
                .await
                .expect("send");
            // Held open until the test ends.
            let _ = ws.next().await;
        });
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let request = format!("ws://127.0.0.1:{port}/bot")
            .into_client_request()
            .unwrap();
        let ws = handshake(tcp.into_std().unwrap(), request, None)
            .await
            .expect("handshake");
        let sink = sink::twilio_for_tests();
        sink.attach(ws);
        // Let all of it reach the socket first.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut ticks = 0;
        while sink.queued_ms() == 0 && ticks < 20 {
            sink.drain(&mut |_| {});
            ticks += 1;
        }
        assert!(
            ticks >= 2,
            "read in {ticks} tick(s): more than a tick's budget"
        );
        assert_eq!(
            sink.queued_ms(),
            10_000 - 20,
            "the whole message, one frame played"
        );
        server.abort();
    }

    #[tokio::test]
    async fn a_plain_socket_out_of_the_reactor_carries_the_stream_both_ways() {
        exchange(false).await;
    }

    #[tokio::test]
    async fn tls_runs_over_the_non_blocking_socket_both_ways() {
        exchange(true).await;
    }
}
