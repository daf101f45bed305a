//! The engine's own tests: time, FIFO links, holds, loss, crashes and restarts, as a pair
//! of hosts (an echo and a client) see them.

use std::cell::RefCell;
use std::rc::Rc;

use streamsim_models::time::SimInstant;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use super::tcp::{TcpListener, TcpStream};
use super::*;

type Log = Rc<RefCell<Vec<String>>>;

fn note(log: &Log, line: String) {
    log.borrow_mut().push(format!("{} {line}", now().as_ms()));
}

/// A host that answers every line on port 7 with the same line, logging what it got.
fn echo(log: Log) -> impl Fn() -> std::pin::Pin<Box<dyn Future<Output = HostResult>>> {
    move || {
        let log = log.clone();
        Box::pin(async move {
            let listener = TcpListener::bind(("0.0.0.0", 7)).await?;
            loop {
                let (stream, _) = listener.accept().await?;
                let log = log.clone();
                spawn_local(async move {
                    let (read, mut write) = stream.into_split();
                    let mut lines = BufReader::new(read).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        note(&log, format!("echo got {line}"));
                        if write
                            .write_all(format!("{line}\n").as_bytes())
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                    note(&log, "echo: closed".into());
                });
            }
        })
    }
}

/// Runs a world of an echo host `e` and a client host `c` running `client`, with `drive`
/// applying faults; returns the log.
fn world<C, CF, D, DF>(seed: u64, latency: (u64, u64), client: C, drive: D) -> Vec<String>
where
    C: Fn(Log) -> CF + 'static,
    CF: Future<Output = HostResult> + 'static,
    D: FnOnce(Control) -> DF,
    DF: Future<Output = ()>,
{
    let entries: Log = Rc::default();
    let mut engine = Engine::new(seed, latency);
    engine.host("e", echo(entries.clone()));
    let for_client = entries.clone();
    engine.host("c", move || client(for_client.clone()));
    let failure = engine.run(&[], drive);
    assert_eq!(failure, None);
    let entries = entries.borrow().clone();
    entries
}

async fn until(control: &Control, ms: u64) {
    control.sleep_until(SimInstant::from_ms(ms)).await;
}

#[test]
fn a_line_goes_there_and_back_in_two_latencies_and_the_clock_jumps_over_idle_time() {
    let entries = world(
        1,
        (5, 5),
        |log| async move {
            let stream = TcpStream::connect(("e", 7)).await?;
            note(&log, "connected".into());
            let (read, mut write) = stream.into_split();
            write.write_all(b"hello\n").await?;
            let mut lines = BufReader::new(read).lines();
            let answer = lines.next_line().await?;
            note(&log, format!("client got {answer:?}"));
            Ok(())
        },
        |control| async move { until(&control, 3_600_000).await },
    );
    // Connect: SYN 5 ms, SYN-ACK 5 ms; the line 5 ms there and 5 ms back; the client's FIN
    // (it returned, dropping the stream) 5 ms.
    assert_eq!(
        entries,
        vec![
            "10 connected",
            "15 echo got hello",
            "20 client got Some(\"hello\")",
            "25 echo: closed"
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>()
    );
}

#[test]
fn a_connection_direction_is_first_in_first_out_under_random_latency_and_one_seed_is_one_run() {
    let run = |seed| {
        world(
            seed,
            (1, 50),
            |log| async move {
                let stream = TcpStream::connect(("e", 7)).await?;
                let (read, mut write) = stream.into_split();
                for n in 0..50 {
                    write.write_all(format!("{n}\n").as_bytes()).await?;
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
                let mut lines = BufReader::new(read).lines();
                for n in 0..50 {
                    assert_eq!(lines.next_line().await?, Some(n.to_string()));
                }
                note(&log, "all back in order".into());
                Ok(())
            },
            |control| async move { until(&control, 10_000).await },
        )
    };
    let first = run(7);
    assert!(
        first.iter().any(|l| l.ends_with("all back in order")),
        "{first:?}"
    );
    let got: Vec<&str> = first
        .iter()
        .filter_map(|l| l.split_once(" echo got ").map(|(_, n)| n))
        .collect();
    assert_eq!(got, (0..50).map(|n| n.to_string()).collect::<Vec<_>>());
    assert_eq!(first, run(7), "seed 7 twice");
    assert_ne!(first, run(8), "another seed draws other latencies");
}

#[test]
fn a_partition_holds_both_ways_and_delivers_everything_in_order_at_the_heal() {
    let entries = world(
        1,
        (5, 5),
        |log| async move {
            let stream = TcpStream::connect(("e", 7)).await?;
            let (read, mut write) = stream.into_split();
            let mut lines = BufReader::new(read).lines();
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            for n in 0..3 {
                write.write_all(format!("{n}\n").as_bytes()).await?;
            }
            for _ in 0..3 {
                let line = lines.next_line().await?;
                note(&log, format!("client got {line:?}"));
            }
            Ok(())
        },
        |control| async move {
            until(&control, 50).await;
            control.hold("c", "e").unwrap();
            until(&control, 5_000).await;
            control.release("e", "c").unwrap();
            until(&control, 10_000).await;
        },
    );
    assert_eq!(
        entries[..6],
        [
            "5000 echo got 0",
            "5000 echo got 1",
            "5000 echo got 2",
            "5005 client got Some(\"0\")",
            "5005 client got Some(\"1\")",
            "5005 client got Some(\"2\")",
        ]
    );
}

#[test]
fn a_one_way_hold_stops_one_direction_only() {
    let entries = world(
        1,
        (5, 5),
        |log| async move {
            let stream = TcpStream::connect(("e", 7)).await?;
            let (read, mut write) = stream.into_split();
            let mut lines = BufReader::new(read).lines();
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            write.write_all(b"ping\n").await?;
            let line = lines.next_line().await?;
            note(&log, format!("client got {line:?}"));
            Ok(())
        },
        |control| async move {
            until(&control, 50).await;
            // The echo's answers are held; the client's line gets through.
            control.hold_oneway("e", "c").unwrap();
            until(&control, 3_000).await;
            control.release_oneway("e", "c").unwrap();
            until(&control, 10_000).await;
        },
    );
    assert_eq!(
        entries[..2],
        ["115 echo got ping", "3000 client got Some(\"ping\")"]
    );
}

#[test]
fn a_crashed_peer_is_silence_and_its_restart_resets_the_old_connection() {
    let entries = world(
        1,
        (5, 5),
        |log| async move {
            let stream = TcpStream::connect(("e", 7)).await?;
            let (mut read, mut write) = stream.into_split();
            // A PING every second, as Synapse's replication does; read what comes back.
            spawn_local(async move {
                let mut buf = [0u8; 64];
                loop {
                    match read.read(&mut buf).await {
                        Ok(0) => break note(&log, "client read: end of stream".into()),
                        Ok(n) => note(&log, format!("client read {n} bytes")),
                        Err(e) => break note(&log, format!("client read: {e}")),
                    }
                }
            });
            for _ in 0..10 {
                tokio::time::sleep(std::time::Duration::from_millis(1_000)).await;
                if write.write_all(b"PING\n").await.is_err() {
                    break;
                }
            }
            Ok(())
        },
        |control| async move {
            until(&control, 2_500).await;
            control.crash("e").unwrap();
            assert!(!control.is_running("e"));
            until(&control, 5_500).await;
            control.start("e").unwrap();
            until(&control, 20_000).await;
        },
    );
    // Connected at 10 ms; answers to the PINGs of 1.01 and 2.01 s; silence while e is down
    // (no end of stream: a crash sends no FIN); the first PING after the restart (sent at
    // 6.01 s) is answered by a reset.
    assert_eq!(
        entries,
        [
            "1015 echo got PING",
            "1020 client read 5 bytes",
            "2015 echo got PING",
            "2020 client read 5 bytes",
            "6020 client read: connection reset by e",
        ]
    );
}

#[test]
fn a_connect_to_a_host_that_is_down_or_not_listening_is_refused_after_a_round_trip() {
    let entries = world(
        1,
        (5, 5),
        |log| async move {
            let refused = TcpStream::connect(("e", 8)).await.err().map(|e| e.kind());
            note(&log, format!("port 8: {refused:?}"));
            tokio::time::sleep(std::time::Duration::from_millis(1_000)).await;
            let refused = TcpStream::connect(("e", 7)).await.err().map(|e| e.kind());
            note(&log, format!("e down: {refused:?}"));
            let unknown = TcpStream::connect(("nowhere", 7))
                .await
                .err()
                .map(|e| e.kind());
            note(&log, format!("nowhere: {unknown:?}"));
            Ok(())
        },
        |control| async move {
            until(&control, 500).await;
            control.crash("e").unwrap();
            until(&control, 5_000).await;
        },
    );
    assert_eq!(
        entries,
        [
            "10 port 8: Some(ConnectionRefused)",
            "1020 e down: Some(ConnectionRefused)",
            "1020 nowhere: Some(NotFound)",
        ]
    );
}

#[test]
fn a_lost_segment_holds_its_link_until_the_retransmission() {
    let entries = world(
        1,
        (5, 5),
        |log| async move {
            let stream = TcpStream::connect(("e", 7)).await?;
            note(&log, "connected".into());
            let (read, mut write) = stream.into_split();
            write.write_all(b"x\n").await?;
            let line = BufReader::new(read).lines().next_line().await?;
            note(&log, format!("client got {line:?}"));
            Ok(())
        },
        |control| async move {
            // Every segment is lost once: each one waits for its retransmission.
            control.set_loss(1.0, &[]).unwrap();
            until(&control, 10_000).await;
        },
    );
    // The SYN is lost at 0 and retransmitted at 200; the SYN-ACK lost at 200, through at
    // 400; the line lost at 400, through at 600; its echo lost at 600, through at 800.
    assert_eq!(
        entries[..3],
        [
            "400 connected",
            "600 echo got x",
            "800 client got Some(\"x\")"
        ]
    );
}

#[test]
fn a_crash_stops_every_task_of_the_host_and_a_restart_runs_its_software_anew() {
    let entries: Log = Rc::default();
    let mut engine = Engine::new(3, (1, 1));
    let for_host = entries.clone();
    engine.host("h", move || {
        let log = for_host.clone();
        async move {
            note(&log, format!("start {}", current_host().incarnation));
            let ticker = log.clone();
            spawn_local(async move {
                loop {
                    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
                    note(&ticker, "tick".into());
                }
            });
            std::future::pending::<()>().await;
            Ok(())
        }
    });
    let failure = engine.run(&[], |control| async move {
        until(&control, 1_000).await;
        control.crash("h").unwrap();
        until(&control, 2_000).await;
        control.start("h").unwrap();
        until(&control, 2_500).await;
    });
    assert_eq!(failure, None);
    assert!(engine.was_running("h"));
    assert_eq!(
        *entries.borrow(),
        [
            "0 start 1",
            "400 tick",
            "800 tick",
            "2000 start 2",
            "2400 tick"
        ]
    );
}

#[test]
fn a_host_whose_software_fails_ends_the_run_and_is_named() {
    let mut engine = Engine::new(3, (1, 1));
    engine.host("h", || async {
        tokio::time::sleep(std::time::Duration::from_millis(700)).await;
        Err::<(), _>("the disk is gone".into())
    });
    let ended = Rc::new(Cell::new(0));
    let seen = ended.clone();
    let failure = engine.run(&[], |control| async move {
        until(&control, 700).await;
        seen.set(control.now().as_ms());
        until(&control, 100_000).await;
    });
    assert_eq!(failure.as_deref(), Some("h: the disk is gone"));
    assert_eq!(ended.get(), 700);
}

#[test]
fn dropping_the_write_half_leaves_the_waiting_read_half_wakeable() {
    // The read half waits in its own task; the write half sends one line and is dropped (a
    // FIN follows the line). The echo's answer must still wake the reader: dropping the
    // write half once cleared the end's waker, and the reader waited forever.
    let entries = world(
        1,
        (5, 5),
        |log| async move {
            let stream = TcpStream::connect(("e", 7)).await?;
            let (read, mut write) = stream.into_split();
            let reader = spawn_local(async move {
                let line = BufReader::new(read).lines().next_line().await;
                note(&log, format!("client got {:?}", line.ok().flatten()));
            });
            tokio::task::yield_now().await;
            write.write_all(b"bye\n").await?;
            drop(write);
            reader.await?;
            Ok(())
        },
        |control| async move { until(&control, 1_000).await },
    );
    assert!(
        entries.iter().any(|l| l == "20 client got Some(\"bye\")"),
        "{entries:?}"
    );
}
