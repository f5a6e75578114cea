//! Unit tests of the guard thread's looks, on real sockets.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;

use super::*;
use crate::guard::Guard;

/// A guard's state on a real listener, and a handle to send it notes.
fn looker(listener: &TcpListener, timeout: Duration, max_bytes: u64) -> (Looker, Guard) {
    let limits = Limits { timeout, max_bytes };
    let (looker, inbox) = Looker::new(listener, limits, Arc::new(AtomicUsize::new(0)), 1).unwrap();
    (looker, Guard { inbox: Some(inbox) })
}

/// A connection that sends half a request gets a JSON 408 once its time is
/// up (not before), and a blocked reader of it wakes with end-of-file.
#[test]
fn half_a_request_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (mut server_side, _) = listener.accept().unwrap();
    client.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
    let reader = thread::spawn(move || {
        let mut got = Vec::new();
        server_side.read_to_end(&mut got).map(|_| got.len())
    });
    let (mut looker, _guard) = looker(&listener, Duration::from_secs(10), 1 << 20);
    let start = Instant::now();
    looker.look(start, Look::Full);
    assert_eq!(looker.conns.len(), 1, "the connection is found");
    looker.look(start + Duration::from_secs(5), Look::Full);
    assert!(
        looker.conns.values().all(|c| c.cut.is_none()),
        "not before the deadline"
    );
    looker.look(start + Duration::from_secs(11), Look::Full);
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut reply = String::new();
    client.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 408 "), "{reply}");
    assert!(reply.ends_with(r#"{"error":"request timeout"}"#), "{reply}");
    assert!(reader.join().unwrap().is_ok(), "the reader saw end-of-file");
}

/// A connection that sends more than the byte budget is cut off with 431,
/// while a quiet one next to it is left alone.
#[test]
fn too_many_bytes_are_cut_off() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut noisy = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let _quiet = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (_a, _) = listener.accept().unwrap();
    let (_b, _) = listener.accept().unwrap();
    let (mut looker, _guard) = looker(&listener, Duration::from_secs(60), 1000);
    looker.look(Instant::now(), Look::Full);
    noisy.write_all(&[b'a'; 5000]).unwrap();
    thread::sleep(Duration::from_millis(50));
    looker.look(Instant::now(), Look::Full);
    let cut = looker.conns.values().filter(|c| c.cut.is_some()).count();
    assert_eq!(cut, 1, "only the noisy one");
    let mut reply = String::new();
    noisy
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = noisy.read_to_string(&mut reply);
    assert!(reply.starts_with("HTTP/1.1 431 "), "{reply}");
}

/// A stream's note frees the thread parked reading it (end-of-file) while
/// writing goes on; the stream is then exempt from every deadline.
#[test]
fn a_stream_is_released_and_exempt() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server_side, peer) = listener.accept().unwrap();
    let mut parked = server_side.try_clone().unwrap();
    parked
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let reader = thread::spawn(move || parked.read(&mut [0u8; 16]));
    let (mut looker, guard) = looker(&listener, Duration::from_millis(10), 1 << 20);
    let hold = guard.stream(Some(peer));
    let now = Instant::now();
    looker.look(now, Look::Full);
    assert_eq!(
        reader.join().unwrap().unwrap(),
        0,
        "the parked reader saw end-of-file"
    );
    looker.look(now + Duration::from_secs(60), Look::Full);
    (&server_side).write_all(b"data: still here\n\n").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut buf = [0u8; 18];
    client.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"data: still here\n\n", "nothing else was written");
    drop(hold);
}

/// A note whose Hold is gone is dropped unread: a connection that came
/// later from the same address is never taken for the one it named.
#[test]
fn a_note_without_its_hold_touches_nothing() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server_side, peer) = listener.accept().unwrap();
    let (mut looker, guard) = looker(&listener, Duration::from_secs(60), 1 << 20);
    drop(guard.stream(Some(peer))); // its stream ended before the guard looked
    looker.look(Instant::now(), Look::Full);
    assert!(looker.pending.is_empty(), "the note is gone");
    assert!(looker
        .conns
        .values()
        .all(|c| c.stream.is_none() && c.cut.is_none()));
    server_side.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 1];
    let still_open = matches!((&server_side).read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
    assert!(still_open, "its read half was not shut");
    drop(client);
}

/// A connection whose request nobody ever reads is nudged: the guard opens
/// a connection of its own to the listener (which this test can see).
#[test]
fn a_forgotten_connection_is_nudged() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (_forgotten, _) = listener.accept().unwrap();
    client.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let (mut looker, _guard) = looker(&listener, Duration::from_secs(60), 1 << 20);
    thread::sleep(Duration::from_millis(20));
    looker.look(Instant::now(), Look::Full);
    thread::sleep(rescue::CONFIRM * 2);
    looker.look(Instant::now(), Look::Quick);
    listener.set_nonblocking(true).unwrap();
    assert!(listener.accept().is_ok(), "a nudge arrived");
}
