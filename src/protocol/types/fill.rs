//! Random values of every payload type, for the seeded round-trip tests (the equivalent of
//! stock's `fill_ctdb_*` in `tests/src/protocol_common.c`).

use super::*;
use crate::protocol::basic::Timeval;
use crate::protocol::ltdb::LtdbHeader;
use crate::protocol::sock_addr::SockAddr;
use crate::testing::Prng;
use std::net::{Ipv4Addr, Ipv6Addr};

fn count(rng: &mut Prng, max: u64) -> usize {
    rng.below(max + 1) as usize
}

fn vec_of<T>(rng: &mut Prng, max: u64, mut make: impl FnMut(&mut Prng) -> T) -> Vec<T> {
    let n = count(rng, max);
    (0..n).map(|_| make(rng)).collect()
}

pub(crate) fn timeval(rng: &mut Prng) -> Timeval {
    Timeval {
        tv_sec: rng.i64(),
        tv_usec: rng.i64(),
    }
}

pub(crate) fn sock_addr(rng: &mut Prng) -> SockAddr {
    if rng.bool() {
        SockAddr::V4 {
            ip: Ipv4Addr::from(rng.u32()),
            port: rng.u16(),
        }
    } else {
        let hi = u128::from(rng.next_u64()) << 64;
        SockAddr::V6 {
            ip: Ipv6Addr::from(hi | u128::from(rng.next_u64())),
            port: rng.u16(),
            flowinfo: rng.u32(),
            scope_id: rng.u32(),
        }
    }
}

pub(crate) fn ltdb_header(rng: &mut Prng) -> LtdbHeader {
    LtdbHeader {
        rsn: rng.next_u64(),
        dmaster: rng.u32(),
        reserved1: rng.u32(),
        flags: rng.u32(),
    }
}

pub(crate) fn vnn_map(rng: &mut Prng) -> VnnMap {
    VnnMap {
        generation: rng.u32(),
        map: vec_of(rng, 8, Prng::u32),
    }
}

pub(crate) fn node_and_flags(rng: &mut Prng) -> NodeAndFlags {
    NodeAndFlags {
        pnn: rng.u32(),
        flags: rng.u32(),
        addr: sock_addr(rng),
    }
}

pub(crate) fn node_map(rng: &mut Prng) -> NodeMap {
    NodeMap {
        nodes: vec_of(rng, 5, node_and_flags),
    }
}

pub(crate) fn node_flag_change(rng: &mut Prng) -> NodeFlagChange {
    NodeFlagChange {
        pnn: rng.u32(),
        new_flags: rng.u32(),
        old_flags: rng.u32(),
    }
}

pub(crate) fn ban_state(rng: &mut Prng) -> BanState {
    BanState {
        pnn: rng.u32(),
        time: rng.u32(),
    }
}

pub(crate) fn uptime(rng: &mut Prng) -> Uptime {
    Uptime {
        current_time: timeval(rng),
        ctdbd_start_time: timeval(rng),
        last_recovery_started: timeval(rng),
        last_recovery_finished: timeval(rng),
    }
}

pub(crate) fn public_ip(rng: &mut Prng) -> PublicIp {
    PublicIp {
        pnn: rng.u32(),
        addr: sock_addr(rng),
    }
}

pub(crate) fn public_ip_list(rng: &mut Prng) -> PublicIpList {
    PublicIpList {
        ips: vec_of(rng, 5, public_ip),
    }
}

pub(crate) fn iface(rng: &mut Prng) -> Iface {
    Iface {
        name: rng.string(CTDB_IFACE_SIZE - 1),
        link_state: rng.u16(),
        references: rng.u32(),
    }
}

pub(crate) fn iface_list(rng: &mut Prng) -> IfaceList {
    IfaceList {
        ifaces: vec_of(rng, 4, iface),
    }
}

pub(crate) fn public_ip_info(rng: &mut Prng) -> PublicIpInfo {
    PublicIpInfo {
        ip: public_ip(rng),
        active_idx: rng.u32(),
        ifaces: vec_of(rng, 4, iface),
    }
}

pub(crate) fn connection(rng: &mut Prng) -> Connection {
    Connection {
        src: sock_addr(rng),
        dst: sock_addr(rng),
    }
}

pub(crate) fn tickle_list(rng: &mut Prng) -> TickleList {
    TickleList {
        addr: sock_addr(rng),
        connections: vec_of(rng, 4, connection),
    }
}

pub(crate) fn addr_info(rng: &mut Prng) -> AddrInfo {
    AddrInfo {
        addr: sock_addr(rng),
        mask: rng.u32(),
        iface: rng.bool().then(|| rng.string(15)),
    }
}

pub(crate) fn dbid(rng: &mut Prng) -> Dbid {
    Dbid {
        db_id: rng.u32(),
        flags: rng.u8(),
    }
}

pub(crate) fn dbid_map(rng: &mut Prng) -> DbidMap {
    DbidMap {
        dbs: vec_of(rng, 6, dbid),
    }
}

pub(crate) fn transdb(rng: &mut Prng) -> Transdb {
    Transdb {
        db_id: rng.u32(),
        tid: rng.u32(),
    }
}

pub(crate) fn pulldb(rng: &mut Prng) -> Pulldb {
    Pulldb {
        db_id: rng.u32(),
        lmaster: rng.u32(),
    }
}

pub(crate) fn pulldb_ext(rng: &mut Prng) -> PulldbExt {
    PulldbExt {
        db_id: rng.u32(),
        lmaster: rng.u32(),
        srvid: rng.next_u64(),
    }
}

pub(crate) fn traverse_start(rng: &mut Prng) -> TraverseStart {
    TraverseStart {
        db_id: rng.u32(),
        reqid: rng.u32(),
        srvid: rng.next_u64(),
    }
}

pub(crate) fn traverse_start_ext(rng: &mut Prng) -> TraverseStartExt {
    TraverseStartExt {
        db_id: rng.u32(),
        reqid: rng.u32(),
        srvid: rng.next_u64(),
        with_empty_records: rng.bool(),
    }
}

pub(crate) fn traverse_all(rng: &mut Prng) -> TraverseAll {
    TraverseAll {
        db_id: rng.u32(),
        reqid: rng.u32(),
        pnn: rng.u32(),
        client_reqid: rng.u32(),
        srvid: rng.next_u64(),
    }
}

pub(crate) fn traverse_all_ext(rng: &mut Prng) -> TraverseAllExt {
    TraverseAllExt {
        db_id: rng.u32(),
        reqid: rng.u32(),
        pnn: rng.u32(),
        client_reqid: rng.u32(),
        srvid: rng.next_u64(),
        with_empty_records: rng.bool(),
    }
}

pub(crate) fn pid_srvid(rng: &mut Prng) -> PidSrvid {
    PidSrvid {
        pid: rng.i32(),
        srvid: rng.next_u64(),
    }
}

pub(crate) fn db_vacuum(rng: &mut Prng) -> DbVacuum {
    DbVacuum {
        db_id: rng.u32(),
        full_vacuum_run: rng.bool(),
    }
}

pub(crate) fn server_id(rng: &mut Prng) -> ServerId {
    ServerId {
        pid: rng.next_u64(),
        task_id: rng.u32(),
        vnn: rng.u32(),
        unique_id: rng.next_u64(),
    }
}

pub(crate) fn key_data(rng: &mut Prng) -> KeyData {
    KeyData {
        db_id: rng.u32(),
        header: ltdb_header(rng),
        key: rng.bytes(40),
    }
}

pub(crate) fn notify_data(rng: &mut Prng) -> NotifyData {
    NotifyData {
        srvid: rng.next_u64(),
        data: rng.bytes(40),
    }
}

pub(crate) fn echo_data(rng: &mut Prng) -> EchoData {
    EchoData {
        timeout: rng.u32(),
        data: rng.bytes(40),
    }
}

pub(crate) fn rec_data(rng: &mut Prng) -> RecData {
    if rng.bool() {
        let header = ltdb_header(rng);
        let key = rng.bytes(20);
        let data = rng.bytes(30);
        RecData::with_header(rng.u32(), &header, &key, &data)
    } else {
        RecData {
            reqid: rng.u32(),
            key: rng.bytes(20),
            data: rng.bytes(30),
        }
    }
}

pub(crate) fn rec_buffer(rng: &mut Prng) -> RecBuffer {
    RecBuffer {
        db_id: rng.u32(),
        records: vec_of(rng, 4, rec_data),
    }
}

pub(crate) fn latency_counter(rng: &mut Prng) -> LatencyCounter {
    LatencyCounter {
        num: rng.i32(),
        min: rng.f64(),
        max: rng.f64(),
        total: rng.f64(),
    }
}

fn buckets(rng: &mut Prng) -> [u32; MAX_COUNT_BUCKETS] {
    std::array::from_fn(|_| rng.u32())
}

pub(crate) fn lock_statistics(rng: &mut Prng) -> LockStatistics {
    LockStatistics {
        num_calls: rng.u32(),
        num_current: rng.u32(),
        num_pending: rng.u32(),
        num_failed: rng.u32(),
        latency: latency_counter(rng),
        buckets: buckets(rng),
    }
}

pub(crate) fn statistics(rng: &mut Prng) -> Statistics {
    Statistics {
        num_clients: rng.u32(),
        frozen: rng.u32(),
        recovering: rng.u32(),
        client_packets_sent: rng.u32(),
        client_packets_recv: rng.u32(),
        node_packets_sent: rng.u32(),
        node_packets_recv: rng.u32(),
        keepalive_packets_sent: rng.u32(),
        keepalive_packets_recv: rng.u32(),
        node: NodePacketCounters {
            req_call: rng.u32(),
            reply_call: rng.u32(),
            req_dmaster: rng.u32(),
            reply_dmaster: rng.u32(),
            reply_error: rng.u32(),
            req_message: rng.u32(),
            req_control: rng.u32(),
            reply_control: rng.u32(),
            req_tunnel: rng.u32(),
        },
        client: ClientPacketCounters {
            req_call: rng.u32(),
            req_message: rng.u32(),
            req_control: rng.u32(),
            req_tunnel: rng.u32(),
        },
        timeouts: TimeoutCounters {
            call: rng.u32(),
            control: rng.u32(),
            traverse: rng.u32(),
        },
        reclock: ReclockLatency {
            ctdbd: latency_counter(rng),
            recd: latency_counter(rng),
        },
        locks: lock_statistics(rng),
        total_calls: rng.u32(),
        pending_calls: rng.u32(),
        childwrite_calls: rng.u32(),
        pending_childwrite_calls: rng.u32(),
        memory_used: rng.u32(),
        last_counter: rng.u32(),
        max_hop_count: rng.u32(),
        hop_count_bucket: buckets(rng),
        call_latency: latency_counter(rng),
        childwrite_latency: latency_counter(rng),
        num_recoveries: rng.u32(),
        statistics_start_time: timeval(rng),
        statistics_current_time: timeval(rng),
        total_ro_delegations: rng.u32(),
        total_ro_revokes: rng.u32(),
    }
}

pub(crate) fn statistics_list(rng: &mut Prng) -> StatisticsList {
    StatisticsList {
        hole: if rng.bool() { rng.u32() } else { 0 },
        stats: vec_of(rng, 2, statistics),
    }
}

pub(crate) fn db_statistics(rng: &mut Prng) -> DbStatistics {
    DbStatistics {
        locks: lock_statistics(rng),
        vacuum_latency: latency_counter(rng),
        db_ro_delegations: rng.u32(),
        db_ro_revokes: rng.u32(),
        hop_count_bucket: buckets(rng),
        num_hot_keys: rng.u32(),
        hot_keys: std::array::from_fn(|_| HotKey {
            count: rng.u32(),
            key_ptr: rng.next_u64(),
            key: rng.bytes(12),
        }),
    }
}

pub(crate) fn tunable(rng: &mut Prng) -> Tunable {
    Tunable {
        value: rng.u32(),
        name: rng.string(30),
    }
}

pub(crate) fn var_list(rng: &mut Prng) -> VarList {
    let names = vec_of(rng, 6, |rng| rng.string(12));
    if rng.bool() {
        VarList::from_names(&names)
    } else {
        VarList {
            text: names.join(":"),
        }
    }
}

pub(crate) fn tunable_list(rng: &mut Prng) -> TunableList {
    TunableList::from_array(std::array::from_fn(|_| rng.u32()))
}

pub(crate) fn election_message(rng: &mut Prng) -> ElectionMessage {
    ElectionMessage {
        num_connected: rng.u32(),
        priority_time: timeval(rng),
        pnn: rng.u32(),
        node_flags: rng.u32(),
    }
}

pub(crate) fn srvid_message(rng: &mut Prng) -> SrvidMessage {
    SrvidMessage {
        pnn: rng.u32(),
        srvid: rng.next_u64(),
    }
}

pub(crate) fn disable_message(rng: &mut Prng) -> DisableMessage {
    DisableMessage {
        pnn: rng.u32(),
        srvid: rng.next_u64(),
        timeout: rng.u32(),
    }
}
