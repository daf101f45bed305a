//! A process's publishing connection to the Redis bus (`RedisSubscriber`'s outbound half):
//! what `Process::broadcast` hands lines to. The subscribing half, which feeds commands into
//! the process, is `redis`.

use std::rc::Rc;

use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::shared::Shared;
use crate::engine::tcp::TcpStream;
use crate::history::Event;
use crate::net::REDIS_PORT;

/// A process's outbound connection: lines are published in order; a line that cannot be
/// written is lost (at most once), and the next one reconnects.
pub struct BusPublisher {
    sender: mpsc::UnboundedSender<String>,
}

impl BusPublisher {
    /// Starts the publishing task of `host` (a process of the running host).
    pub fn start(shared: Rc<Shared>, host: &str) -> Self {
        let (sender, mut receiver) = mpsc::unbounded_channel::<String>();
        let host = host.to_owned();
        crate::engine::spawn_local(async move {
            let mut connection: Option<TcpStream> = None;
            while let Some(line) = receiver.recv().await {
                if connection.is_none() {
                    connection = crate::net::connect("redis", REDIS_PORT).await.ok();
                }
                if let Some(stream) = &mut connection {
                    let frame = format!("PUBLISH {line}\n");
                    shared.cuts.wait_open(&host, "redis").await;
                    if let Err(error) = stream.write_all(frame.as_bytes()).await {
                        shared.observer.record(Event::Disconnected {
                            host: host.clone(),
                            peer: "redis".to_owned(),
                            reason: format!("publish connection: {error}"),
                        });
                        connection = None;
                    }
                }
            }
        });
        BusPublisher { sender }
    }

    pub fn publish(&self, line: &str) {
        let _ = self.sender.send(line.to_owned());
    }
}
