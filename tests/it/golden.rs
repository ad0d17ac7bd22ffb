//! Golden vectors captured from stock ctdbd 4.17.12 (see `tests/golden/MANIFEST.md`).
//!
//! For every line of `tests/golden/expect.txt`: the frame decodes, the decoded header,
//! operation fields and payload facts equal what the capture tooling recorded, the frame
//! re-encodes to the identical bytes with the writer's padding policy, and the control or
//! message payload re-encodes to its exact bytes too.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use ctdb::protocol::control::{
    pull_reply_data, pull_request_data, ControlReplyData, ControlRequestData,
};
use ctdb::protocol::opcode::ControlOpcode;
use ctdb::protocol::packet::{Body, Packet, Padding};
use ctdb::protocol::srvid::{self, MessageData};
use ctdb::protocol::types::{RecBuffer, RecData};
use ctdb::protocol::{Marshal, SockAddr};

const MIN_VECTORS: usize = 60;

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// One line of expect.txt.
struct Vector {
    path: String,
    fields: BTreeMap<String, String>,
}

fn load_vectors() -> Vec<Vector> {
    let text = fs::read_to_string(golden_dir().join("expect.txt")).unwrap();
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words = line.split_whitespace();
        let path = words.next().unwrap().to_string();
        let mut fields = BTreeMap::new();
        for word in words {
            let (key, value) = word.split_once('=').unwrap_or_else(|| {
                panic!("{path}: malformed field {word:?} in expect.txt");
            });
            fields.insert(key.to_string(), value.to_string());
        }
        out.push(Vector { path, fields });
    }
    out
}

/// Undoes the %-escaping of expect.txt strings (`%20` space, `%0A` newline, `%25` percent,
/// `%00` the empty string).
fn unescape(value: &str) -> String {
    if value == "%00" {
        return String::new();
    }
    value
        .replace("%20", " ")
        .replace("%0A", "\n")
        .replace("%25", "%")
}

/// Integers are written as decimal (possibly negative) or `0x` hex.
fn parse_int(value: &str) -> Option<i128> {
    if let Some(hex) = value.strip_prefix("0x") {
        i128::from_str_radix(hex, 16).ok()
    } else {
        value.parse::<i128>().ok()
    }
}

fn values_match(expected: &str, actual: &str) -> bool {
    match (parse_int(expected), parse_int(actual)) {
        (Some(e), Some(a)) => e == a,
        _ => unescape(expected) == actual,
    }
}

fn addr_text(addr: &SockAddr) -> String {
    if addr.port() == 0 {
        addr.ip().to_string()
    } else {
        format!("{}:{}", addr.ip(), addr.port())
    }
}

/// Facts collected from our decoders, in the vocabulary of expect.txt.
#[derive(Default)]
struct Facts(BTreeMap<String, String>);

impl Facts {
    fn put(&mut self, key: &str, value: impl ToString) {
        self.0.insert(key.to_string(), value.to_string());
    }
}

fn request_facts(data: &ControlRequestData, facts: &mut Facts) {
    use ControlRequestData as D;
    match data {
        D::DbId(db_id) | D::DbIdPadded(db_id) => facts.put("p.db_id", db_id),
        D::DbName(name) | D::TunableName(name) => facts.put("p.name", name),
        D::Tunable(t) => {
            facts.put("p.value", t.value);
            facts.put("p.name", &t.name);
        }
        D::Transdb(t) => {
            facts.put("p.db_id", t.db_id);
            facts.put("p.tid", t.tid);
        }
        D::PulldbExt(p) => {
            facts.put("p.db_id", p.db_id);
            facts.put("p.lmaster", p.lmaster);
            facts.put("p.srvid", p.srvid);
        }
        D::DebugLevel(level) => facts.put("p.value", level),
        D::RecMode(mode) => facts.put("p.value", u32::from(*mode)),
        D::Role(role) => facts.put("p.value", role),
        D::BanState(b) => {
            facts.put("p.pnn", b.pnn);
            facts.put("p.time", b.time);
        }
        D::NodeFlagChange(c) => {
            facts.put("p.pnn", c.pnn);
            facts.put("p.new_flags", c.new_flags);
            facts.put("p.old_flags", c.old_flags);
        }
        D::VnnMap(v) => {
            facts.put("p.generation", v.generation);
            facts.put("p.size", v.map.len());
        }
        D::PublicIp(ip) => {
            facts.put("p.pnn", ip.pnn);
            facts.put("p.addr", addr_text(&ip.addr));
        }
        D::SockAddr(addr) => facts.put("p.addr", addr_text(addr)),
        D::Pid(pid) => facts.put("p.pid", pid),
        D::TraverseStartExt(t) => {
            facts.put("p.db_id", t.db_id);
            facts.put("p.reqid", t.reqid);
            facts.put("p.srvid", t.srvid);
            facts.put("p.withemptyrecords", u8::from(t.with_empty_records));
        }
        D::TraverseAllExt(t) => {
            facts.put("p.db_id", t.db_id);
            facts.put("p.reqid", t.reqid);
            facts.put("p.pnn", t.pnn);
            facts.put("p.client_reqid", t.client_reqid);
            facts.put("p.srvid", t.srvid);
            facts.put("p.withemptyrecords", u8::from(t.with_empty_records));
        }
        D::TraverseAll(t) => {
            facts.put("p.db_id", t.db_id);
            facts.put("p.reqid", t.reqid);
            facts.put("p.pnn", t.pnn);
            facts.put("p.client_reqid", t.client_reqid);
            facts.put("p.srvid", t.srvid);
        }
        D::RecData(r) => {
            facts.put("p.reqid", r.reqid);
            facts.put("p.keylen", r.key.len());
            facts.put("p.datalen", r.data.len());
        }
        D::RecBuffer(b) => {
            facts.put("p.db_id", b.db_id);
            facts.put("p.count", b.records.len());
        }
        D::PidSrvid(p) => {
            facts.put("p.pid", p.pid);
            facts.put("p.srvid", p.srvid);
        }
        D::EchoData(e) => {
            facts.put("p.timeout", e.timeout);
            facts.put("p.len", e.data.len());
        }
        _ => {}
    }
}

fn reply_facts(data: &ControlReplyData, facts: &mut Facts) {
    use ControlReplyData as D;
    match data {
        D::DebugLevel(level) => facts.put("p.level", *level as u32),
        D::DbId(db_id) => facts.put("p.db_id", db_id),
        D::TunableValue(value) => facts.put("p.value", value),
        D::Capabilities(caps) => facts.put("p.capabilities", caps),
        D::Runstate(state) => facts.put("p.runstate", u32::from(*state)),
        D::NumRecords(n) => facts.put("p.num_records", n),
        D::TdbFlags(flags) => facts.put("p.tdb_flags", *flags as u32),
        D::DbPath(s) | D::DbName(s) => facts.put("p.string", s),
        D::ReclockFile(s) | D::HealthReason(s) => {
            if let Some(s) = s {
                facts.put("p.string", s);
            }
        }
        D::VnnMap(v) => {
            facts.put("p.generation", v.generation);
            facts.put("p.size", v.map.len());
        }
        D::DbidMap(m) => facts.put("p.num", m.dbs.len()),
        D::PublicIpList(l) => facts.put("p.num", l.ips.len()),
        D::NodeMap(m) => facts.put("p.num", m.nodes.len()),
        D::IfaceList(l) => facts.put("p.num", l.ifaces.len()),
        D::StatisticsList(l) => facts.put("p.num", l.stats.len()),
        D::Statistics(s) => facts.put("p.num_clients", s.num_clients),
        D::BanState(b) => {
            facts.put("p.pnn", b.pnn);
            facts.put("p.time", b.time);
        }
        D::Seqnum(n) => facts.put("p.seqnum", n),
        D::PublicIpInfo(info) => {
            facts.put("p.pnn", info.ip.pnn);
            facts.put("p.addr", addr_text(&info.ip.addr));
            facts.put("p.active_idx", info.active_idx);
            facts.put("p.num", info.ifaces.len());
        }
        D::TickleList(t) => {
            facts.put("p.addr", addr_text(&t.addr));
            facts.put("p.num", t.connections.len());
        }
        // The wire length counts the NUL that ends the list.
        D::VarList(v) => facts.put("p.len", v.text.len() + 1),
        D::EchoData(e) => {
            facts.put("p.timeout", e.timeout);
            facts.put("p.len", e.data.len());
        }
        _ => {}
    }
}

fn is_recovery_srvid(srvid: u64) -> bool {
    srvid >> 48 == srvid::RECOVERY >> 48
}

fn message_facts(srvid: u64, data: &[u8], facts: &mut Facts, problems: &mut Vec<String>) {
    if is_recovery_srvid(srvid) {
        match RecBuffer::pull(data) {
            Ok((buffer, used)) => {
                facts.put("p.db_id", buffer.db_id);
                facts.put("p.count", buffer.records.len());
                check_same(
                    "rec_buffer payload",
                    data,
                    &buffer.to_bytes(),
                    used,
                    problems,
                );
            }
            Err(e) => problems.push(format!("rec_buffer payload does not decode: {e:?}")),
        }
        return;
    }
    if srvid::range_of(srvid) == srvid::CLIENT_RANGE && !data.is_empty() {
        // Traverse records delivered to the client library, one rec_data per message.
        match RecData::pull(data) {
            Ok((record, used)) => {
                check_same(
                    "traverse rec_data",
                    data,
                    &record.to_bytes(),
                    used,
                    problems,
                );
            }
            Err(e) => problems.push(format!("traverse rec_data does not decode: {e:?}")),
        }
        return;
    }
    if srvid::range_of(srvid) == srvid::TOOL_RANGE && data.len() == 4 {
        let value = i32::from_ne_bytes(data.try_into().unwrap());
        facts.put("p.value", value);
        return;
    }
    match MessageData::pull(srvid, data) {
        Ok(message) => {
            match &message {
                MessageData::Leader { pnn } => facts.put("p.pnn", pnn),
                MessageData::Election(e) => {
                    facts.put("p.num_connected", e.num_connected);
                    facts.put("p.pnn", e.pnn);
                    facts.put("p.node_flags", e.node_flags);
                }
                MessageData::TakeoverRun(m) => {
                    facts.put("p.pnn", m.pnn);
                    facts.put("p.srvid", m.srvid);
                }
                MessageData::DisableTakeoverRuns(m) => {
                    facts.put("p.pnn", m.pnn);
                    facts.put("p.srvid", m.srvid);
                    facts.put("p.timeout", m.timeout);
                }
                _ => {}
            }
            let again = message.to_bytes();
            check_same("message payload", data, &again, data.len(), problems);
        }
        Err(e) => problems.push(format!("message payload does not decode: {e:?}")),
    }
}

/// `decoded` must reproduce `original` exactly; `used` is how much of `original` the
/// decoder claimed to consume.
fn check_same(
    what: &str,
    original: &[u8],
    encoded: &[u8],
    used: usize,
    problems: &mut Vec<String>,
) {
    if encoded != original {
        problems.push(format!(
            "{what}: re-encoding differs ({} bytes in, {} consumed, {} out)\n{}",
            original.len(),
            used,
            encoded.len(),
            hex_diff(original, encoded)
        ));
    }
}

/// The header and operation fields plus payload facts of a decoded packet.
fn packet_facts(
    vector: &Vector,
    frame: &[u8],
    facts: &mut Facts,
    problems: &mut Vec<String>,
) -> Option<Packet> {
    let (header, packet) = match Packet::pull_with_header(frame) {
        Ok(decoded) => decoded,
        Err(e) => {
            problems.push(format!("does not decode: {e:?}"));
            return None;
        }
    };
    facts.put("len", header.length);
    facts.put("gen", header.generation);
    facts.put("op", u32::from(header.operation));
    facts.put("dest", header.destnode);
    facts.put("src", header.srcnode);
    facts.put("reqid", header.reqid);

    match &packet.body {
        Body::ReqCall(c) => {
            facts.put("flags", c.flags);
            facts.put("db_id", c.db_id);
            facts.put("callid", c.callid);
            facts.put("hopcount", c.hopcount);
            facts.put("keylen", c.key.len());
            facts.put("calldatalen", c.calldata.len());
        }
        Body::ReplyCall(c) => {
            facts.put("status", c.status);
            facts.put("datalen", c.data.len());
        }
        Body::ReqDmaster(d) => {
            facts.put("db_id", d.db_id);
            facts.put("rsn", d.rsn);
            facts.put("dmaster", d.dmaster);
            facts.put("keylen", d.key.len());
            facts.put("datalen", d.data.len());
        }
        Body::ReplyDmaster(d) => {
            facts.put("db_id", d.db_id);
            facts.put("rsn", d.rsn);
            facts.put("keylen", d.key.len());
            facts.put("datalen", d.data.len());
        }
        Body::ReplyError(e) => {
            facts.put("status", e.status);
            facts.put("msglen", e.msg.len());
        }
        Body::ReqMessage(m) => {
            facts.put("srvid", m.srvid);
            facts.put("datalen", m.data.len());
            message_facts(m.srvid, &m.data, facts, problems);
        }
        Body::ReqControl(c) => {
            facts.put("opcode", u32::from(c.opcode));
            facts.put("srvid", c.srvid);
            facts.put("client_id", c.client_id);
            facts.put("flags", c.flags);
            facts.put("datalen", c.data.len());
            match pull_request_data(c.opcode, &c.data) {
                Ok(data) => {
                    request_facts(&data, facts);
                    check_same(
                        "request payload",
                        &c.data,
                        &data.to_bytes(),
                        c.data.len(),
                        problems,
                    );
                }
                Err(e) => problems.push(format!(
                    "request payload of {} does not decode: {e:?}",
                    c.opcode.name()
                )),
            }
        }
        Body::ReplyControl(c) => {
            facts.put("status", c.status);
            facts.put("datalen", c.data.len());
            facts.put("errorlen", c.errmsg.len());
            if let Some(message) = c.error_message() {
                facts.put("p.errmsg", message);
            }
            if let Some(opcode) = vector.fields.get("for_opcode").and_then(|v| parse_int(v)) {
                let opcode = ControlOpcode::from(u32::try_from(opcode).unwrap());
                // Stock only parses reply data for status 0; other statuses carry no data here.
                if c.status == 0 || !c.data.is_empty() {
                    match pull_reply_data(opcode, &c.data) {
                        Ok(data) => {
                            reply_facts(&data, facts);
                            check_same(
                                "reply payload",
                                &c.data,
                                &data.to_bytes(),
                                c.data.len(),
                                problems,
                            );
                        }
                        Err(e) => problems.push(format!(
                            "reply payload of {} does not decode: {e:?}",
                            opcode.name()
                        )),
                    }
                }
            }
        }
        Body::ReqKeepalive(k) => {
            if let Some(version) = k.version {
                facts.put("version", version);
            }
            if let Some(uptime) = k.uptime {
                facts.put("uptime", uptime);
            }
        }
        Body::ReqTunnel(t) => {
            facts.put("tunnel_id", t.tunnel_id);
            facts.put("flags", t.flags);
            facts.put("datalen", t.data.len());
        }
        Body::Unknown { operation, .. } => {
            problems.push(format!("decodes as unknown operation {operation}"));
        }
    }
    Some(packet)
}

/// Keys in expect.txt that describe the vector rather than a decoded value.
const META_KEYS: &[&str] = &["sender", "padding", "run", "for_opcode"];

fn padding_of(vector: &Vector) -> Padding {
    match vector.fields.get("padding").map(String::as_str) {
        Some("daemon") => Padding::Daemon,
        Some("align8") => Padding::Align8,
        Some("none") => Padding::Exact,
        other => panic!("{}: unknown padding {other:?}", vector.path),
    }
}

fn check_vector(vector: &Vector) -> Vec<String> {
    let mut problems = Vec::new();
    let frame = fs::read(golden_dir().join(&vector.path)).unwrap();
    let mut facts = Facts::default();
    let Some(packet) = packet_facts(vector, &frame, &mut facts, &mut problems) else {
        return problems;
    };

    for (key, expected) in &vector.fields {
        if META_KEYS.contains(&key.as_str()) {
            continue;
        }
        match facts.0.get(key) {
            Some(actual) if values_match(expected, actual) => {}
            Some(actual) => problems.push(format!("{key}: expected {expected}, decoded {actual}")),
            None => problems.push(format!("{key}: expected {expected}, decoder gave no value")),
        }
    }

    let encoded = packet.encode(padding_of(vector));
    if encoded != frame {
        problems.push(format!(
            "re-encoding with {:?} differs ({} bytes captured, {} encoded)\n{}",
            padding_of(vector),
            frame.len(),
            encoded.len(),
            hex_diff(&frame, &encoded)
        ));
    }
    problems
}

/// Side-by-side hex of the 16-byte rows that differ (at most 12 rows).
fn hex_diff(expected: &[u8], actual: &[u8]) -> String {
    let rows = expected.len().max(actual.len()).div_ceil(16);
    let mut out = String::new();
    let mut shown = 0;
    for row in 0..rows {
        let range = row * 16..(row + 1) * 16;
        let e = expected
            .get(range.start..range.end.min(expected.len()))
            .unwrap_or(&[]);
        let a = actual
            .get(range.start..range.end.min(actual.len()))
            .unwrap_or(&[]);
        if e == a {
            continue;
        }
        if shown == 12 {
            out.push_str("    ...\n");
            break;
        }
        shown += 1;
        let hex = |bytes: &[u8]| {
            bytes
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let _ = writeln!(out, "    {:06x} captured: {}", range.start, hex(e));
        let _ = writeln!(out, "    {:06x}  encoded: {}", range.start, hex(a));
    }
    out
}

#[test]
fn golden_vectors_decode_and_reencode_identically() {
    let vectors = load_vectors();
    assert!(
        vectors.len() >= MIN_VECTORS,
        "only {} golden vectors listed in expect.txt",
        vectors.len()
    );
    let mut failures = Vec::new();
    for vector in &vectors {
        let problems = check_vector(vector);
        if !problems.is_empty() {
            failures.push(format!("{}:\n  {}", vector.path, problems.join("\n  ")));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} golden vectors failed:\n{}",
        failures.len(),
        vectors.len(),
        failures.join("\n")
    );
}

#[test]
fn every_golden_file_is_listed() {
    let listed: Vec<String> = load_vectors().into_iter().map(|v| v.path).collect();
    let mut unlisted = Vec::new();
    for area in ["unix", "helper", "tcp"] {
        for entry in fs::read_dir(golden_dir().join(area)).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            let path = format!("{area}/{name}");
            if name.ends_with(".bin") && !listed.contains(&path) {
                unlisted.push(path);
            }
        }
    }
    for path in &listed {
        assert!(
            golden_dir().join(path).is_file(),
            "{path} is listed but missing"
        );
    }
    assert!(unlisted.is_empty(), "not in expect.txt: {unlisted:?}");
}
