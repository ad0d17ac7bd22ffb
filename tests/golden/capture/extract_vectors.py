#!/usr/bin/env python3
"""Turn the raw logs of capture_all.sh into golden vectors.

usage: extract_vectors.py RAW_DIR GOLDEN_DIR

Reads RAW_DIR/{unix,unix-elect}.jsonl (recording proxy) and
RAW_DIR/{tcp-main,tcp-elect}.jsonl (reassembled node-to-node TCP), picks one
frame per "shape" (operation, opcode or srvid class, sender, status class,
padding, ...), and rewrites:

  GOLDEN_DIR/{unix,helper,tcp}/NNN-<name>.bin   one frame each, as on the wire
  GOLDEN_DIR/expect.txt                         machine-readable expectations
  GOLDEN_DIR/MANIFEST.md                        human-readable table

Only *.bin files in those three directories are removed first; nothing else
under GOLDEN_DIR is touched.  The field values in expect.txt come from this
script's own small decoder (independent of the Rust code under test).
"""

import json
import os
import struct
import sys

MAGIC = 0x43544442

OPS = {0: "REQ_CALL", 1: "REPLY_CALL", 2: "REQ_DMASTER", 3: "REPLY_DMASTER",
       4: "REPLY_ERROR", 5: "REQ_MESSAGE", 7: "REQ_CONTROL", 8: "REPLY_CONTROL",
       9: "REQ_KEEPALIVE", 10: "REQ_TUNNEL"}

CONTROLS = {0: "PROCESS_EXISTS", 1: "STATISTICS", 3: "PING", 4: "GETDBPATH", 5: "GETVNNMAP", 6: "SETVNNMAP", 7: "GET_DEBUG", 8: "SET_DEBUG", 9: "GET_DBMAP", 10: "GET_NODEMAPv4", 11: "SET_DMASTER", 13: "PULL_DB", 14: "PUSH_DB", 15: "GET_RECMODE", 16: "SET_RECMODE", 17: "STATISTICS_RESET", 18: "DB_ATTACH", 19: "SET_CALL", 20: "TRAVERSE_START", 21: "TRAVERSE_ALL", 22: "TRAVERSE_DATA", 23: "REGISTER_SRVID", 24: "DEREGISTER_SRVID", 25: "GET_DBNAME", 26: "ENABLE_SEQNUM", 27: "UPDATE_SEQNUM", 29: "DUMP_MEMORY", 30: "GET_PID", 31: "GET_RECMASTER", 32: "SET_RECMASTER", 33: "FREEZE", 34: "THAW", 35: "GET_PNN", 36: "SHUTDOWN", 37: "GET_MONMODE", 44: "TCP_CLIENT", 45: "TCP_ADD", 46: "TCP_REMOVE", 47: "STARTUP", 48: "SET_TUNABLE", 49: "GET_TUNABLE", 50: "LIST_TUNABLES", 52: "MODIFY_FLAGS", 53: "GET_ALL_TUNABLES", 54: "KILL_TCP", 55: "GET_TCP_TICKLE_LIST", 56: "SET_TCP_TICKLE_LIST", 57: "REGISTER_SERVER_ID", 58: "UNREGISTER_SERVER_ID", 59: "CHECK_SERVER_ID", 60: "GET_SERVER_ID_LIST", 61: "DB_ATTACH_PERSISTENT", 62: "PERSISTENT_STORE", 63: "UPDATE_RECORD", 64: "SEND_GRATUITOUS_ARP", 65: "TRANSACTION_START", 66: "TRANSACTION_COMMIT", 67: "WIPE_DATABASE", 69: "UPTIME", 70: "START_RECOVERY", 71: "END_RECOVERY", 72: "RELOAD_NODES_FILE", 74: "TRY_DELETE_RECORDS", 75: "ENABLE_MONITOR", 76: "DISABLE_MONITOR", 77: "ADD_PUBLIC_IP", 78: "DEL_PUBLIC_IP", 79: "RUN_EVENTSCRIPTS", 80: "GET_CAPABILITIES", 81: "START_PERSISTENT_UPDATE", 82: "CANCEL_PERSISTENT_UPDATE", 83: "TRANS2_COMMIT", 84: "TRANS2_FINISHED", 85: "TRANS2_ERROR", 86: "TRANS2_COMMIT_RETRY", 87: "RECD_PING", 88: "RELEASE_IP", 89: "TAKEOVER_IP", 90: "GET_PUBLIC_IPS", 91: "GET_NODEMAP", 96: "GET_EVENT_SCRIPT_STATUS", 97: "TRAVERSE_KILL", 98: "RECD_RECLOCK_LATENCY", 99: "GET_RECLOCK_FILE", 100: "SET_RECLOCK_FILE", 101: "STOP_NODE", 102: "CONTINUE_NODE", 103: "SET_NATGWSTATE", 104: "SET_LMASTERROLE", 105: "SET_RECMASTERROLE", 107: "ENABLE_SCRIPT", 108: "DISABLE_SCRIPT", 109: "SET_BAN_STATE", 110: "GET_BAN_STATE", 111: "SET_DB_PRIORITY", 112: "GET_DB_PRIORITY", 113: "TRANSACTION_CANCEL", 114: "REGISTER_NOTIFY", 115: "DEREGISTER_NOTIFY", 116: "TRANS2_ACTIVE", 117: "GET_LOG", 118: "CLEAR_LOG", 119: "TRANS3_COMMIT", 120: "GET_DB_SEQNUM", 121: "DB_SET_HEALTHY", 122: "DB_GET_HEALTH", 123: "GET_PUBLIC_IP_INFO", 124: "GET_IFACES", 125: "SET_IFACE_LINK_STATE", 126: "TCP_ADD_DELAYED_UPDATE", 127: "GET_STAT_HISTORY", 128: "SCHEDULE_FOR_DELETION", 129: "SET_DB_READONLY", 130: "CHECK_SRVIDS", 131: "TRAVERSE_START_EXT", 132: "GET_DB_STATISTICS", 133: "SET_DB_STICKY", 134: "RELOAD_PUBLIC_IPS", 135: "TRAVERSE_ALL_EXT", 136: "RECEIVE_RECORDS", 137: "IPREALLOCATED", 138: "GET_RUNSTATE", 139: "DB_DETACH", 140: "GET_NODES_FILE", 141: "DB_FREEZE", 142: "DB_THAW", 143: "DB_TRANSACTION_START", 144: "DB_TRANSACTION_COMMIT", 145: "DB_TRANSACTION_CANCEL", 146: "DB_PULL", 147: "DB_PUSH_START", 148: "DB_PUSH_CONFIRM", 149: "DB_OPEN_FLAGS", 150: "DB_ATTACH_REPLICATED", 151: "CHECK_PID_SRVID", 152: "TUNNEL_REGISTER", 153: "TUNNEL_DEREGISTER", 154: "VACUUM_FETCH", 155: "DB_VACUUM", 156: "ECHO_DATA", 157: "DISABLE_NODE", 158: "ENABLE_NODE"}

SRVIDS = {
    0xF002000000000000: "BANNING",
    0xF100000000000000: "ELECTION",
    0xF101000000000000: "LEADER",
    0xF200000000000000: "RECONFIGURE",
    0xF300000000000000: "RELEASE_IP",
    0xF301000000000000: "TAKE_IP",
    0xF400000000000000: "SET_NODE_FLAGS",
    0xF800000000000000: "MEM_DUMP",
    0xF900000000000000: "PUSH_NODE_FLAGS",
    0xFA00000000000000: "RELOAD_NODES",
    0xFB00000000000000: "TAKEOVER_RUN",
    0xFB01000000000000: "REBALANCE_NODE",
    0xFB03000000000000: "DISABLE_TAKEOVER_RUNS",
    0xFB04000000000000: "DISABLE_RECOVERIES",
    0xFC00000000000000: "DISABLE_IP_CHECK",
}

# Opcodes whose request payload is a single u32 db_id.
DBID_REQUESTS = {4, 25, 26, 27, 121, 122, 129, 132, 133, 139, 141, 142, 145, 148, 149}
# Opcodes whose request payload is a NUL-terminated name.
NAME_REQUESTS = {18, 61, 150}
# Opcodes whose reply payload is a NUL-terminated string.
STRING_REPLIES = {4, 25, 99, 122}
# Opcodes whose reply payload is one u32/int32.
U32_REPLIES = {7: "level", 18: "db_id", 49: "value", 61: "db_id", 80: "capabilities",
               138: "runstate", 146: "num_records", 148: "num_records", 149: "tdb_flags",
               150: "db_id"}


def u32(b, o):
    return struct.unpack_from("<I", b, o)[0]


def i32(b, o):
    return struct.unpack_from("<i", b, o)[0]


def u64(b, o):
    return struct.unpack_from("<Q", b, o)[0]


def hx(v):
    return "0x%x" % v


def sockaddr(b, o):
    fam = struct.unpack_from("<H", b, o)[0]
    if fam == 2:
        port = struct.unpack_from(">H", b, o + 2)[0]
        ip = ".".join(str(x) for x in b[o + 4:o + 8])
        return ip if port == 0 else "%s:%d" % (ip, port)
    if fam == 10:
        return "ipv6"
    return "family%d" % fam


def cstring(data):
    s = data.split(b"\0", 1)[0].decode("utf-8", "replace")
    # expect.txt is whitespace-separated
    return s.replace("%", "%25").replace(" ", "%20").replace("\n", "%0A") or "%00"


def srvid_class(s):
    if s >> 48 == 0xF001:
        return "RECOVERY"
    if s in SRVIDS:
        return SRVIDS[s]
    top = s >> 56
    if top == 0xCE:
        return "TOOL"
    if top == 0xBE:
        return "CLIENT"
    if s >> 32 == 0:
        return "PID"
    return "OTHER"


def rec_buffer_facts(data):
    if len(data) < 8:
        return {}
    return {"p.db_id": hx(u32(data, 0)), "p.count": u32(data, 4)}


class Frame:
    def __init__(self, b, transport, run, t, conn=None, direction=None, sender=None,
                 src_node=None, dst_node=None, cmd="", cause=""):
        self.b = b
        self.transport = transport  # unix | helper | tcp
        self.run = run
        self.t = t
        self.conn = conn
        self.dir = direction
        self.sender = sender  # cli | probe | recovery_helper | takeover_helper | daemon
        self.src_node = src_node
        self.dst_node = dst_node
        self.cmd = cmd
        self.cause = cause
        (self.length, self.magic, self.version, self.generation, self.op,
         self.destnode, self.srcnode, self.reqid) = struct.unpack_from("<8I", b, 0)
        self.request = None  # for replies: the matching request Frame
        self.reply = None  # for requests: the matching reply Frame

    @property
    def padding(self):
        if self.sender == "daemon":
            return "daemon"
        return "align8" if self.length % 8 == 0 else "none"

    @property
    def opcode(self):
        if self.op == 7:
            return u32(self.b, 32)
        if self.op == 8 and self.request is not None:
            return self.request.opcode
        return None

    def status(self):
        if self.op in (1, 4, 8):
            return i32(self.b, 32)
        return None

    def status_class(self):
        s = self.status()
        if s is None:
            return ""
        return "ok" if s == 0 else ("neg" if s < 0 else "pos")

    def fields(self):
        """Header and operation fields, then payload facts (p.*)."""
        b = self.b
        f = {"len": self.length, "gen": self.generation, "op": self.op,
             "dest": hx(self.destnode), "src": hx(self.srcnode), "reqid": hx(self.reqid)}
        op = self.op
        if op == 0:
            flags, db_id, callid, hop, keylen, cdlen = struct.unpack_from("<6I", b, 32)
            f.update({"flags": hx(flags), "db_id": hx(db_id), "callid": hx(callid),
                      "hopcount": hop, "keylen": keylen, "calldatalen": cdlen})
        elif op == 1:
            f.update({"status": i32(b, 32), "datalen": u32(b, 36)})
        elif op == 2:
            f.update({"db_id": hx(u32(b, 32)), "rsn": u64(b, 40), "dmaster": u32(b, 48),
                      "keylen": u32(b, 52), "datalen": u32(b, 56)})
        elif op == 3:
            f.update({"db_id": hx(u32(b, 32)), "rsn": u64(b, 40), "keylen": u32(b, 48),
                      "datalen": u32(b, 52)})
        elif op == 4:
            f.update({"status": i32(b, 32), "msglen": u32(b, 36)})
        elif op == 5:
            srvid, datalen = u64(b, 32), u32(b, 40)
            f.update({"srvid": hx(srvid), "datalen": datalen})
            f.update(self.message_facts(srvid, b[44:44 + datalen]))
        elif op == 7:
            opcode, _pad, srvid, client_id, flags, datalen = struct.unpack_from("<IIQIII", b, 32)
            f.update({"opcode": opcode, "srvid": hx(srvid), "client_id": client_id,
                      "flags": hx(flags), "datalen": datalen})
            f.update(self.request_facts(opcode, b[60:60 + datalen]))
        elif op == 8:
            status, datalen, errorlen = struct.unpack_from("<iII", b, 32)
            f.update({"status": status, "datalen": datalen, "errorlen": errorlen})
            if self.opcode is not None:
                f["for_opcode"] = self.opcode
                f.update(self.reply_facts(self.opcode, status, b[44:44 + datalen]))
            if errorlen:
                f["p.errmsg"] = cstring(b[44 + datalen:44 + datalen + errorlen])
        elif op == 9:
            f.update({"version": hx(u32(b, 32)), "uptime": u32(b, 36)})
        elif op == 10:
            f.update({"tunnel_id": hx(u64(b, 32)), "flags": hx(u32(b, 40)), "datalen": u32(b, 44)})
        return f

    @staticmethod
    def message_facts(srvid, d):
        c = srvid_class(srvid)
        if c == "RECOVERY" and len(d) >= 8:
            return rec_buffer_facts(d)
        if c == "LEADER" and len(d) == 4:
            return {"p.pnn": hx(u32(d, 0))}
        if c == "ELECTION" and len(d) == 32:
            return {"p.num_connected": u32(d, 0), "p.pnn": u32(d, 24), "p.node_flags": hx(u32(d, 28))}
        if c == "TAKEOVER_RUN" and len(d) == 16:
            return {"p.pnn": u32(d, 0), "p.srvid": hx(u64(d, 8))}
        if c == "DISABLE_TAKEOVER_RUNS" and len(d) == 24:
            return {"p.pnn": u32(d, 0), "p.srvid": hx(u64(d, 8)), "p.timeout": u32(d, 16)}
        if c == "TOOL" and len(d) == 4:
            return {"p.value": i32(d, 0)}
        return {}

    @staticmethod
    def request_facts(opcode, d):
        try:
            if opcode in DBID_REQUESTS and len(d) >= 4:
                return {"p.db_id": hx(u32(d, 0))}
            if opcode in NAME_REQUESTS:
                return {"p.name": cstring(d)}
            if opcode == 49:
                return {"p.name": cstring(d[4:])}
            if opcode == 48:
                return {"p.value": u32(d, 0), "p.name": cstring(d[8:])}
            if opcode == 120:
                return {"p.db_id": hx(u32(d, 0))}
            if opcode in (67, 143, 144):
                return {"p.db_id": hx(u32(d, 0)), "p.tid": u32(d, 4)}
            if opcode in (146, 147):
                return {"p.db_id": hx(u32(d, 0)), "p.lmaster": hx(u32(d, 4)), "p.srvid": hx(u64(d, 8))}
            if opcode in (8, 16, 104, 105):
                return {"p.value": i32(d, 0)}
            if opcode == 109:
                return {"p.pnn": u32(d, 0), "p.time": u32(d, 4)}
            if opcode == 52:
                return {"p.pnn": u32(d, 0), "p.new_flags": hx(u32(d, 4)), "p.old_flags": hx(u32(d, 8))}
            if opcode == 6:
                return {"p.generation": u32(d, 0), "p.size": u32(d, 4)}
            if opcode in (88, 89):
                return {"p.pnn": u32(d, 0), "p.addr": sockaddr(d, 4)}
            if opcode in (55, 123):
                return {"p.addr": sockaddr(d, 0)}
            if opcode == 0:
                return {"p.pid": i32(d, 0)}
            if opcode == 131:
                return {"p.db_id": hx(u32(d, 0)), "p.reqid": u32(d, 4), "p.srvid": hx(u64(d, 8)),
                        "p.withemptyrecords": d[16]}
            if opcode == 135:
                return {"p.db_id": hx(u32(d, 0)), "p.reqid": u32(d, 4), "p.pnn": u32(d, 8),
                        "p.client_reqid": u32(d, 12), "p.srvid": hx(u64(d, 16)),
                        "p.withemptyrecords": d[24]}
            if opcode == 21:
                return {"p.db_id": hx(u32(d, 0)), "p.reqid": u32(d, 4), "p.pnn": u32(d, 8),
                        "p.client_reqid": u32(d, 12), "p.srvid": hx(u64(d, 16))}
            if opcode == 22:
                return {"p.reqid": u32(d, 4), "p.keylen": u32(d, 8), "p.datalen": u32(d, 12)}
            if opcode in (63, 74, 119, 154):
                return rec_buffer_facts(d)
            if opcode == 151:
                return {"p.pid": i32(d, 0), "p.srvid": hx(u64(d, 4))}
            if opcode == 156:
                return {"p.timeout": u32(d, 0), "p.len": u32(d, 4)}
        except (struct.error, IndexError):
            return {}
        return {}

    @staticmethod
    def reply_facts(opcode, status, d):
        if status != 0 and not d:
            return {}
        try:
            if opcode in U32_REPLIES and len(d) == 4:
                return {"p." + U32_REPLIES[opcode]: hx(u32(d, 0))}
            if opcode in STRING_REPLIES:
                return {"p.string": cstring(d)} if d else {}
            if opcode == 5:
                return {"p.generation": u32(d, 0), "p.size": u32(d, 4)}
            if opcode in (9, 90, 91, 124, 140):
                return {"p.num": u32(d, 0)}
            if opcode == 127:
                return {"p.num": u32(d, 0)}
            if opcode == 1:
                return {"p.num_clients": u32(d, 0)}
            if opcode == 110:
                return {"p.pnn": u32(d, 0), "p.time": u32(d, 4)}
            if opcode == 120:
                return {"p.seqnum": u64(d, 0)}
            if opcode == 123:
                return {"p.pnn": hx(u32(d, 0)), "p.addr": sockaddr(d, 4),
                        "p.active_idx": u32(d, 32), "p.num": u32(d, 36)}
            if opcode == 55:
                return {"p.addr": sockaddr(d, 0), "p.num": u32(d, 28)}
            if opcode == 50:
                return {"p.len": u32(d, 0)}
            if opcode == 156:
                return {"p.timeout": u32(d, 0), "p.len": u32(d, 4)}
        except (struct.error, IndexError):
            return {}
        return {}

    # ---- naming and selection

    def op_label(self):
        if self.op == 7:
            return CONTROLS.get(self.opcode, "opcode%d" % self.opcode)
        if self.op == 8:
            if self.opcode is None:
                return "unmatched"
            return CONTROLS.get(self.opcode, "opcode%d" % self.opcode)
        if self.op == 5:
            return srvid_class(u64(self.b, 32))
        return ""

    def name(self):
        op = {0: "req_call", 1: "reply_call", 2: "req_dmaster", 3: "reply_dmaster",
              4: "reply_error", 5: "msg", 7: "req", 8: "reply", 9: "keepalive",
              10: "tunnel"}.get(self.op, "op%d" % self.op)
        parts = []
        if self.transport != "tcp":
            parts.append({"daemon": "d", "cli": "cli", "probe": "probe",
                          "recovery_helper": "rh", "takeover_helper": "th"}[self.sender])
        parts.append(op)
        lab = self.op_label()
        if lab:
            parts.append(lab.lower())
        if self.op == 5:
            facts = self.fields()
            if "p.count" in facts:
                parts.append("db%s-n%d" % (facts["p.db_id"][2:], facts["p.count"]))
        sc = self.status_class()
        if sc and sc != "ok":
            parts.append(sc)
        if self.op == 8 and u32(self.b, 40):
            parts.append("errmsg")
        if self.padding == "none":
            parts.append("unpadded")
        return "-".join(parts).replace("_", "_")

    def shape(self):
        local = "tcp" if self.transport == "tcp" else "local"
        pad = self.padding
        if self.op == 7:
            datalen = u32(self.b, 56)
            client = u32(self.b, 48) != 0
            flags = u32(self.b, 52)
            rsc = self.reply.status_class() if self.reply else "noreply"
            extra = ()
            if self.opcode in (49, 48):  # keep valid, unknown and obsolete names apart
                extra = (self.reply.status() if self.reply else None,)
            return (local, self.sender_class(), 7, self.opcode, flags, datalen > 0, client, pad, extra)
        if self.op == 8:
            datalen, errorlen = u32(self.b, 36), u32(self.b, 40)
            sc = self.status() if self.opcode in (48, 49) else self.status_class()
            return (local, 8, self.opcode, sc, datalen > 0, errorlen > 0, pad)
        if self.op == 5:
            srvid = u64(self.b, 32)
            c = srvid_class(srvid)
            d = self.b[44:44 + u32(self.b, 40)]
            extra = ()
            if c == "RECOVERY":
                facts = rec_buffer_facts(d)
                if facts.get("p.count", 0) > 0:
                    extra = (facts["p.db_id"], self.dir)
                else:
                    extra = ("empty", self.dir)
            if c == "LEADER":
                extra = (d == b"\xff\xff\xff\xff",)
            return (local, self.sender_class(), 5, c, len(d) > 0, pad, extra)
        if self.op == 9:
            return (local, 9, u32(self.b, 36) >= 10)
        return (local, self.sender_class(), self.op, pad, self.dir)

    def sender_class(self):
        return "daemon" if self.sender == "daemon" else (
            "probe" if self.sender == "probe" else "clientlib")

    def from_to(self):
        if self.transport == "tcp":
            return "ctdbd n%d → ctdbd n%d" % (self.src_node, self.dst_node)
        node = "ctdbd n%d" % self.src_node
        who = {"cli": "ctdb CLI", "probe": "probe.py", "recovery_helper": "ctdb_recovery_helper",
               "takeover_helper": "ctdb_takeover_helper", "daemon": "?"}
        client = who[self.client_kind]
        return ("%s → %s" % (client, node)) if self.dir == "c2d" else ("%s → %s" % (node, client))


def classify_cmd(cmd):
    if "probe.py" in cmd:
        return "probe"
    if "ctdb_recovery_helper" in cmd:
        return "recovery_helper"
    if "ctdb_takeover_helper" in cmd:
        return "takeover_helper"
    return "cli"


def load_unix(path, run):
    frames, marks = [], []
    conns = {}
    if not os.path.exists(path):
        return frames, marks
    for line in open(path, encoding="utf-8"):
        r = json.loads(line)
        ev = r["ev"]
        if ev == "mark":
            marks.append((r["t"], r["text"]))
        elif ev == "open":
            cause = marks[-1][1] if marks else "cluster start-up"
            conns[r["conn"]] = (r["label"], r["cmd"], cause)
        elif ev == "frame":
            label, cmd, cause = conns.get(r["conn"], (r["label"], "", ""))
            kind = classify_cmd(cmd)
            node = int(label.rsplit(".n", 1)[1])
            transport = "helper" if kind.endswith("_helper") else "unix"
            sender = "daemon" if r["dir"] == "d2c" else kind
            if kind.endswith("_helper"):
                cause = "%s, %s" % (kind.replace("_", " "),
                                    "during `%s`" % cause.split(": ", 1)[1] if ": " in cause else cause)
            elif ": " in cause:
                cause = "`%s`" % cause.split(": ", 1)[1]
            fr = Frame(bytes.fromhex(r["hex"]), transport, run, r["t"], conn=(run, r["conn"]),
                       direction=r["dir"], sender=sender, src_node=node, cmd=cmd, cause=cause)
            fr.client_kind = kind
            frames.append(fr)
    return frames, marks


def load_tcp(path, run, marks):
    frames = []
    if not os.path.exists(path):
        return frames
    mi = 0
    for line in open(path, encoding="utf-8"):
        r = json.loads(line)
        src_ip = r["src"].rsplit(":", 1)[0]
        dst_ip = r["dst"].rsplit(":", 1)[0]
        while mi < len(marks) and marks[mi][0] <= r["t"]:
            mi += 1
        if mi == 0:
            cause = "cluster start-up" + (" (no cluster lock)" if run == "elect" else "")
        else:
            text = marks[mi - 1][1]
            cause = "during `%s`" % text.split(": ", 1)[1] if ": " in text else "during %s" % text
        fr = Frame(bytes.fromhex(r["hex"]), "tcp", run, r["t"], direction="n2n", sender="daemon",
                   src_node=int(src_ip.split(".")[3]) - 1, dst_node=int(dst_ip.split(".")[3]) - 1,
                   cause=cause)
        fr.client_kind = "daemon"
        frames.append(fr)
    return frames


def match_replies(frames):
    """Pairs each REPLY_CONTROL with its REQ_CONTROL by (connection or node pair, reqid).
    Requests are queued per key and consumed in order, so a log where a reply happens to
    precede its request still pairs up."""
    def key(f, reply):
        if f.transport == "tcp":
            a, b = (f.dst_node, f.src_node) if reply else (f.src_node, f.dst_node)
            return (f.run, a, b, f.reqid)
        return (f.conn, f.reqid)

    def usable(f):
        return f.magic == MAGIC and f.length >= 32

    requests = {}
    for f in frames:
        if usable(f) and f.op == 7 and f.dir in ("c2d", "n2n"):
            requests.setdefault(key(f, False), []).append(f)
    for f in frames:
        if usable(f) and f.op == 8 and f.dir in ("d2c", "n2n"):
            queue = requests.get(key(f, True))
            while queue:
                req = queue.pop(0)
                if req.reply is None:
                    f.request, req.reply = req, f
                    break


def select(frames):
    chosen = {}
    order = []
    for f in frames:
        if f.magic != MAGIC or f.length < 32 or f.length != len(f.b):
            continue
        if f.op == 8 and f.request is None:
            continue  # cannot name it
        if f.length > 65536:
            continue
        key = f.shape()
        cur = chosen.get(key)
        if cur is None:
            chosen[key] = f
            order.append(key)
        elif f.length > cur.length:
            # prefer the richest example of a shape (more records, more IPs, ...)
            chosen[key] = f
    picked = [chosen[k] for k in order]
    # A reply without its request (or the other way round) is still useful,
    # but keep pairs together where both were picked.
    picked.sort(key=lambda f: f.t)
    return picked


def main():
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    raw, golden = sys.argv[1], sys.argv[2]
    info = {}
    if os.path.exists(os.path.join(raw, "info.txt")):
        for line in open(os.path.join(raw, "info.txt"), encoding="utf-8"):
            if "=" in line:
                k, v = line.rstrip("\n").split("=", 1)
                info[k] = v

    main_unix, main_marks = load_unix(os.path.join(raw, "unix.jsonl"), "main")
    elect_unix, elect_marks = load_unix(os.path.join(raw, "unix-elect.jsonl"), "elect")
    frames = main_unix + load_tcp(os.path.join(raw, "tcp-main.jsonl"), "main", main_marks)
    frames += elect_unix + load_tcp(os.path.join(raw, "tcp-elect.jsonl"), "elect", elect_marks)
    frames.sort(key=lambda f: f.t)
    match_replies(frames)
    picked = select(frames)

    for area in ("unix", "helper", "tcp"):
        d = os.path.join(golden, area)
        os.makedirs(d, exist_ok=True)
        for name in os.listdir(d):
            if name.endswith(".bin"):
                os.unlink(os.path.join(d, name))

    counters = {"unix": 0, "helper": 0, "tcp": 0}
    rows = []
    expect_lines = []
    used = set()
    for f in picked:
        counters[f.transport] += 1
        base = "%03d-%s" % (counters[f.transport], f.name())
        rel = "%s/%s.bin" % (f.transport, base)
        assert rel not in used
        used.add(rel)
        with open(os.path.join(golden, rel), "wb") as fh:
            fh.write(f.b)
        fields = f.fields()
        expect_lines.append(" ".join(
            [rel, "sender=%s" % f.sender, "padding=%s" % f.padding, "run=%s" % f.run] +
            ["%s=%s" % (k, v) for k, v in fields.items()]))
        what = OPS.get(f.op, "op%d" % f.op)
        detail = f.op_label()
        if f.op == 7:
            detail = "%s (%d)" % (detail, f.opcode)
        elif f.op == 8 and f.opcode is not None:
            detail = "%s (%d)" % (detail, f.opcode)
        elif f.op == 5:
            detail = "%s `%s`" % (detail, hx(u64(f.b, 32)))
        st = f.status()
        rows.append("| `%s` | %s | %s | %s | %s | %s | %s | %d | %s |" % (
            rel, f.transport, f.dir, f.from_to(), what, detail,
            "" if st is None else st, f.length, f.cause.replace("|", "\\|")))

    with open(os.path.join(golden, "expect.txt"), "w", encoding="utf-8") as fh:
        fh.write("# Generated by tests/golden/capture/extract_vectors.py — do not edit by hand.\n")
        fh.write("# One vector per line: <path> then key=value fields (whitespace separated).\n")
        fh.write("# sender: cli|probe|recovery_helper|takeover_helper|daemon; padding: daemon|align8|none\n")
        fh.write("# Header: len gen op dest src reqid; per operation the struct fields;\n")
        fh.write("# p.* = payload facts; for_opcode = opcode of the matched request (replies).\n")
        fh.write("# Integers are decimal or 0x-hex; strings are %%-escaped (%%20 = space, %%00 = empty).\n")
        for line in expect_lines:
            fh.write(line + "\n")

    total = sum(len(f.b) for f in picked)
    with open(os.path.join(golden, "MANIFEST.md"), "w", encoding="utf-8") as fh:
        fh.write(MANIFEST_HEAD.format(
            count=len(picked), total=total, date=info.get("date", "?"),
            package=info.get("package", "?"), version=info.get("ctdb_version", "?"),
            main_prefix=info.get("main_prefix", "?"), elect_prefix=info.get("elect_prefix", "?")))
        fh.write("| File | Transport | Dir | From → to | Operation | Opcode / srvid | Status | Bytes | Caused by |\n")
        fh.write("|---|---|---|---|---|---|---|---|---|\n")
        for row in rows:
            fh.write(row + "\n")
    print("wrote %d vectors (%d bytes): %s" % (len(picked), total, counters))


MANIFEST_HEAD = """# Golden CTDB packets captured from stock ctdbd

{count} frames ({total} bytes), one per file, byte-for-byte as they crossed the wire.

* Captured: {date} (UTC) from `{package}` (`ctdb version` → `{version}`), x86_64,
  CTDB_TEST_MODE local clusters on 127.0.x addresses (main run `{main_prefix}.0/24`,
  election run `{elect_prefix}.0/24`).
* Re-run: `tests/golden/capture/capture_all.sh` (as root: tcpdump on `lo`; about 90 s;
  `--keep` keeps the raw logs). It rewrites `unix/`, `helper/`, `tcp/`, this file and
  `expect.txt`. Generation numbers, pids, reqids, times and file names change from run to run.
* How: `scripts/local_cluster.sh` runs 3 stock daemons. The stock CLI, a raw client
  (`capture/probe.py`) and the recovery/takeover helpers (via `capture/helper_wrapper.sh`,
  which swaps the socket argument) talk to the daemons through a recording unix-socket proxy
  (`capture/ctdb_proxy.py`); node-to-node TCP on port 4379 is recorded with tcpdump and
  reassembled by `capture/tcp_frames.py`. A second, lock-less run provides ELECTION messages.
  `capture/extract_vectors.py` keeps one frame per shape (operation, opcode/srvid class, sender
  kind, status class, data present, padding), preferring the longest example.

Areas: `unix/` = stock CLI or probe.py ↔ local daemon; `helper/` = ctdb_recovery_helper /
ctdb_takeover_helper ↔ local daemon; `tcp/` = daemon ↔ daemon. Dir: `c2d` client → daemon,
`d2c` daemon → client, `n2n` node → node. Padding policy for re-encoding (`expect.txt`): frames
written by a daemon use the daemon rule, frames written by the stock client library (CLI,
helpers) and padded probe frames use 8-byte alignment, `padding=none` marks the deliberately
unpadded 60-byte control. `expect.txt` holds the decoded fields the Rust test checks.

Notes: GET_DB_STATISTICS replies embed raw `TDB_DATA` structs (a heap pointer + size) for the
hot keys, so those bytes are arbitrary; REPLY_CONTROL error strings written by the daemon are
not NUL-terminated (`errorlen = strlen`).

"""

if __name__ == "__main__":
    main()
