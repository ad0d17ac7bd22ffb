//! REGISTER_NOTIFY and DEREGISTER_NOTIFY.

use super::*;
use crate::protocol::types::NotifyData;

fn client_control(opcode: ControlOpcode, data: Vec<u8>) -> Vec<u8> {
    control(opcode, CURRENT_NODE, 4, data)
}

fn notify(srvid: u64, data: &[u8]) -> Vec<u8> {
    NotifyData {
        srvid,
        data: data.to_vec(),
    }
    .to_bytes()
}

fn status_of(effects: &[Effect], client: ClientId) -> i32 {
    let replies = client_replies(effects, client);
    assert_eq!(replies.len(), 1, "one reply: {effects:?}");
    replies[0].1.status
}

#[test]
fn notifications_are_broadcast_when_the_client_goes_away() {
    let mut d = started(0);
    let now = Instant::ZERO;
    d.on_node_connected(now, 1);
    d.on_client_connected(now, 1, 10);
    d.on_client_connected(now, 2, 11);
    // Client 2 listens on the srvid; client 1 registers two notifications and drops one.
    let register = Packet {
        generation: 0,
        destnode: CURRENT_NODE,
        srcnode: 0,
        reqid: 3,
        body: Body::ReqControl(ReqControl {
            opcode: ControlOpcode::RegisterSrvid,
            srvid: 0xAB,
            client_id: 0,
            flags: 0,
            data: vec![],
        }),
    };
    d.on_client_frame(now, 2, &register.encode(Padding::Exact), &HOST);
    // The leaving client listens too; it must not be sent anything once gone.
    d.on_client_frame(now, 1, &register.encode(Padding::Exact), &HOST);
    drain(&mut d);
    let reg = |d: &mut Daemon, srvid, data: &[u8]| {
        d.on_client_frame(
            now,
            1,
            &client_control(ControlOpcode::RegisterNotify, notify(srvid, data)),
            &HOST,
        );
        status_of(&drain(d), 1)
    };
    assert_eq!(reg(&mut d, 0xAB, b"bye"), 0);
    assert_eq!(reg(&mut d, 0xAB, b"again"), -1, "one per srvid");
    assert_eq!(reg(&mut d, 0xCD, b"gone"), 0);
    let mut short = notify(0xEF, b"xy");
    short.pop();
    d.on_client_frame(
        now,
        1,
        &client_control(ControlOpcode::RegisterNotify, short),
        &HOST,
    );
    assert_eq!(status_of(&drain(&mut d), 1), -1, "length must match");
    let dereg = |d: &mut Daemon, srvid: u64| {
        d.on_client_frame(
            now,
            1,
            &client_control(
                ControlOpcode::DeregisterNotify,
                srvid.to_ne_bytes().to_vec(),
            ),
            &HOST,
        );
        status_of(&drain(d), 1)
    };
    assert_eq!(dereg(&mut d, 0xCD), 0);
    assert_eq!(dereg(&mut d, 0xCD), -1, "already gone");

    d.on_client_closed(now, 1);
    let effects = drain(&mut d);
    let to_peer = node_frames(&effects, 1);
    assert_eq!(
        to_peer.len(),
        1,
        "broadcast to connected nodes: {effects:?}"
    );
    assert_eq!(
        to_peer[0].body,
        Body::ReqMessage(ReqMessage {
            srvid: 0xAB,
            data: b"bye".to_vec()
        })
    );
    let local: Vec<Packet> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::SendClient { client: 2, frame } => Some(Packet::pull(frame).unwrap()),
            _ => None,
        })
        .collect();
    assert_eq!(local.len(), 1, "and to local listeners");
    assert!(effects
        .iter()
        .all(|e| !matches!(e, Effect::SendClient { client: 1, .. })));
    assert_eq!(to_peer[0].body, local[0].body);
    // The other client closing sends nothing.
    d.on_client_closed(now, 2);
    assert!(node_frames(&drain(&mut d), 1).is_empty());
}

#[test]
fn notify_controls_from_other_nodes_fail() {
    let mut d = started(0);
    let now = Instant::ZERO;
    d.on_node_connected(now, 1);
    let frame = Packet {
        generation: 0,
        destnode: 0,
        srcnode: 1,
        reqid: 9,
        body: Body::ReqControl(ReqControl {
            opcode: ControlOpcode::RegisterNotify,
            srvid: 0,
            client_id: 1,
            flags: 0,
            data: notify(1, b"x"),
        }),
    };
    d.on_node_frame(now, 1, &frame.encode(Padding::Align8), &HOST);
    let replies = node_frames(&drain(&mut d), 1);
    assert!(
        matches!(&replies[..], [Packet { body: Body::ReplyControl(r), .. }] if r.status == -1),
        "{replies:?}"
    );
}
