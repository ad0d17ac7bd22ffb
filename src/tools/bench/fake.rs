//! A toy cluster for the load tool's tests: one thread, one socket per "node", answering
//! GET_PNN, PING and REGISTER_SRVID and routing messages between the nodes' clients the way
//! ctdbd does. No timing fidelity, just enough protocol to run every workload end to end.

use super::conn::Conn;
use crate::protocol::header::CURRENT_NODE;
use crate::protocol::opcode::ControlOpcode;
use crate::protocol::packet::{Body, Packet, ReplyControl};
use mio::net::UnixListener;
use mio::{Events, Interest, Poll, Token};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

#[derive(Debug)]
pub struct FakeCluster {
    pub sockets: Vec<PathBuf>,
    dir: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

const FIRST_CLIENT: usize = 1000;

impl FakeCluster {
    pub fn start(nodes: usize) -> FakeCluster {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ctdb-bench-fake-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let sockets: Vec<PathBuf> = (0..nodes).map(|n| dir.join(format!("n{n}.sock"))).collect();
        let listeners: Vec<UnixListener> = sockets
            .iter()
            .map(|p| UnixListener::bind(p).unwrap())
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = Arc::clone(&stop);
        #[allow(clippy::disallowed_methods)] // Test scaffolding, not the daemon.
        let thread = std::thread::spawn(move || serve(listeners, &stop_flag));
        FakeCluster {
            sockets,
            dir,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for FakeCluster {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct Client {
    node: u32,
    conn: Conn,
    srvids: Vec<u64>,
}

fn serve(mut listeners: Vec<UnixListener>, stop: &AtomicBool) {
    let mut poll = Poll::new().unwrap();
    let mut events = Events::with_capacity(256);
    for (i, l) in listeners.iter_mut().enumerate() {
        poll.registry()
            .register(l, Token(i), Interest::READABLE)
            .unwrap();
    }
    let mut clients: Vec<Option<Client>> = Vec::new();
    let mut packets = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        poll.poll(&mut events, Some(Duration::from_millis(20)))
            .unwrap();
        for event in &events {
            let token = event.token().0;
            if token < FIRST_CLIENT {
                while let Ok((stream, _)) = listeners[token].accept() {
                    let mut conn = Conn::from_stream(stream);
                    let index = clients.len();
                    poll.registry()
                        .register(
                            conn.stream_mut(),
                            Token(FIRST_CLIENT + index),
                            Interest::READABLE | Interest::WRITABLE,
                        )
                        .unwrap();
                    clients.push(Some(Client {
                        node: u32::try_from(token).unwrap(),
                        conn,
                        srvids: Vec::new(),
                    }));
                }
                continue;
            }
            let index = token - FIRST_CLIENT;
            let Some(client) = clients[index].as_mut() else {
                continue;
            };
            let _ = client.conn.flush();
            packets.clear();
            if client.conn.receive(&mut packets).is_err() {
                clients[index] = None;
                continue;
            }
            for packet in packets.drain(..) {
                handle(&mut clients, index, packet);
            }
        }
    }
}

fn handle(clients: &mut [Option<Client>], from: usize, packet: Packet) {
    let connected = clients.iter().flatten().count();
    let Some(client) = clients[from].as_mut() else {
        return;
    };
    match packet.body {
        Body::ReqControl(control) => {
            let status = match control.opcode {
                ControlOpcode::GetPnn => i32::try_from(client.node).unwrap(),
                ControlOpcode::Ping => i32::try_from(connected).unwrap(),
                ControlOpcode::RegisterSrvid => {
                    client.srvids.push(control.srvid);
                    0
                }
                _ => -1,
            };
            let reply = Packet {
                body: Body::ReplyControl(ReplyControl {
                    status,
                    ..ReplyControl::default()
                }),
                ..packet
            };
            let _ = client.conn.send(&reply);
        }
        Body::ReqMessage(message) => {
            let dest = if packet.destnode == CURRENT_NODE {
                client.node
            } else {
                packet.destnode
            };
            for target in clients.iter_mut().flatten() {
                if target.node == dest && target.srvids.contains(&message.srvid) {
                    let _ = target.conn.send(&Packet {
                        generation: packet.generation,
                        destnode: dest,
                        srcnode: packet.srcnode,
                        reqid: packet.reqid,
                        body: Body::ReqMessage(message.clone()),
                    });
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::bench::concurrent::{self, ConcurrentOptions};
    use crate::tools::bench::ring::{self, RingOptions, DEFAULT_SRVID};
    use crate::tools::bench::rtt::{self, RttOptions};

    #[test]
    fn rtt_counts_every_round_trip() {
        let cluster = FakeCluster::start(2);
        let options = RttOptions {
            destnode: 1,
            opcode: ControlOpcode::GetPnn,
            count: 200,
            warmup: 5,
        };
        let kv = rtt::run(&cluster.sockets[0], &options).unwrap();
        assert_eq!(kv.get("count"), Some("200"));
        assert_eq!(kv.get("opcode"), Some("GET_PNN"));
        let p50: f64 = kv.get("p50_us").unwrap().parse().unwrap();
        let p99: f64 = kv.get("p99_us").unwrap().parse().unwrap();
        assert!(p50 <= p99);
    }

    #[test]
    fn concurrent_clients_all_finish() {
        let cluster = FakeCluster::start(1);
        let options = ConcurrentOptions {
            clients: 12,
            count: 40,
            destnode: CURRENT_NODE,
            opcode: ControlOpcode::Ping,
            timeout: Duration::from_secs(30),
        };
        let kv = concurrent::run(&cluster.sockets[0], &options).unwrap();
        assert_eq!(kv.get("count"), Some("480"));
        assert_eq!(kv.get("clients"), Some("12"));
        assert!(kv.get("ops_per_s").is_some());
    }

    #[test]
    fn ring_tokens_travel_both_ways() {
        let cluster = FakeCluster::start(3);
        // Sockets in scrambled order: the ring still runs in PNN order.
        let sockets = vec![
            cluster.sockets[2].clone(),
            cluster.sockets[0].clone(),
            cluster.sockets[1].clone(),
        ];
        let options = RingOptions {
            sockets,
            seconds: 0.3,
            srvid: DEFAULT_SRVID,
            setup_timeout: Duration::from_secs(10),
        };
        let kv = ring::run(&options).unwrap();
        let count = |k: &str| kv.get(k).unwrap().parse::<u64>().unwrap();
        assert!(count("plus_msgs") > 10, "{}", kv.render());
        assert!(count("minus_msgs") > 10, "{}", kv.render());
        assert_eq!(count("reinjected"), 0);
        assert_eq!(count("nodes"), 3);
        // Node 0 sees one message in three of each token's hops.
        let total = count("total_msgs");
        let first = count("plus_msgs") + count("minus_msgs");
        assert!(
            total >= 3 * first - 6 && total <= 3 * first + 6,
            "{}",
            kv.render()
        );
    }

    #[test]
    fn ring_rejects_two_sockets_of_one_node() {
        let cluster = FakeCluster::start(2);
        let options = RingOptions {
            sockets: vec![cluster.sockets[0].clone(), cluster.sockets[0].clone()],
            seconds: 0.1,
            srvid: DEFAULT_SRVID,
            setup_timeout: Duration::from_secs(5),
        };
        assert!(ring::run(&options).is_err());
    }

    #[test]
    fn missing_socket_is_an_error_not_a_panic() {
        let options = RttOptions {
            destnode: CURRENT_NODE,
            opcode: ControlOpcode::Ping,
            count: 1,
            warmup: 0,
        };
        assert!(rtt::run(std::path::Path::new("/nonexistent/ctdbd.socket"), &options).is_err());
    }
}
