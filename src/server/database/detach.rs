//! DB_DETACH (mirrors `ctdb_control_db_detach` in `server/ctdb_ltdb_server.c`).

use super::{DatabaseSet, DbContext, DbEffect, DbReply, RECOVERY_ACTIVE};
use crate::protocol::opcode::ControlOpcode;
use crate::server::effect::ClientId;

impl DatabaseSet {
    /// DB_DETACH: from a local client it is only checked and broadcast to every connected
    /// node (this one included); from a daemon the database is really dropped.
    pub(super) fn control_db_detach(
        &mut self,
        data: &[u8],
        client: Option<ClientId>,
        ctx: &DbContext<'_>,
    ) -> DbReply {
        // Stock reads the id without a size check; anything but four bytes is refused here.
        let Some(db_id) = super::exact_u32(data) else {
            return DbReply::fail();
        };
        let Some(index) = self.index_of(db_id) else {
            log::error!("Invalid dbid 0x{db_id:08x} in DB detach");
            return DbReply::fail();
        };
        let name = self.dbs[index].name.clone();
        if ctx.tunables.allow_client_db_attach() == 1 {
            log::error!(
                "DB detach from database {name} denied. Clients are allowed access to \
                 databases (AllowClientDBAccess == 1)"
            );
            return DbReply::fail();
        }
        if !self.dbs[index].is_volatile() {
            log::error!("Detaching non-volatile database {name} denied");
            return DbReply::fail();
        }
        if ctx.recovery_mode == RECOVERY_ACTIVE {
            log::error!("DB detach denied while in recovery");
            return DbReply::fail();
        }
        if client.is_some() {
            self.effects.push_back(DbEffect::BroadcastControl {
                opcode: ControlOpcode::DbDetach,
                data: data.to_vec(),
            });
            return DbReply::status(0);
        }
        self.traverse_db_detached(db_id);
        // Dropping the database closes its file and the read-only tracking file.
        drop(self.dbs.remove(index));
        log::info!("Detached from database '{name}'");
        DbReply::status(0)
    }
}
