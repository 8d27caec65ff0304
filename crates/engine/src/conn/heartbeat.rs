//! The heartbeat: pings (v4) or the client's pings (v3), and the deadline for a session to
//! connect a namespace socket. Its state is part of the connection's one `State`, under the
//! connection's one mutex.

use std::sync::Arc;

use tokio::time::Instant;

use super::Conn;
use crate::eio::Frame;
use crate::types::DisconnectReason;

/// The heartbeat part of the connection's state.
pub(super) struct Heartbeat {
    pub(super) next_ping_at: Instant,
    pub(super) pong_deadline: Option<Instant>,
    /// Engine.IO v3: the client pings; we close if none arrives in time.
    pub(super) last_client_ping: Instant,
    /// Until a namespace socket connects: when the session is closed for not connecting one
    /// (sooner while it has not even sent a CONNECT).
    pub(super) connect_deadline: Option<Instant>,
    pub(super) connect_sent: bool,
}

impl Heartbeat {
    pub(super) fn new(now: Instant, config: &crate::EngineConfig) -> Self {
        Self {
            next_ping_at: now + config.ping_interval,
            pong_deadline: None,
            last_client_ping: now,
            connect_deadline: Some(now + config.first_connect_timeout.min(config.connect_timeout)),
            connect_sent: false,
        }
    }
}

impl Conn {
    /// Run due heartbeat and connect-timeout duties; returns when to call again, or `None`
    /// once the connection is closed.
    pub(crate) fn heartbeat_tick(self: &Arc<Self>) -> Option<Instant> {
        let now = Instant::now();
        let config = self.host.config();
        let mut send_ping = false;
        let mut timeout = None;
        let next = {
            let mut st = self.lock();
            if st.closed.is_some() {
                return None;
            }
            if st
                .heartbeat
                .connect_deadline
                .is_some_and(|deadline| now >= deadline)
            {
                timeout = Some(DisconnectReason::TransportClose);
            }
            if self.eio >= 4 {
                match st.heartbeat.pong_deadline {
                    Some(deadline) if now >= deadline => {
                        timeout = Some(DisconnectReason::PingTimeout)
                    }
                    Some(_) => {}
                    None if now >= st.heartbeat.next_ping_at => {
                        send_ping = true;
                        // Counted from when the ping was due, not from when this timer ran
                        // (a little later): a client that stays silent for pingInterval +
                        // pingTimeout finds the session closed, as the protocol says. At least
                        // half the timeout remains, should this tick come very late.
                        let due = st.heartbeat.next_ping_at + config.ping_timeout;
                        st.heartbeat.pong_deadline = Some(due.max(now + config.ping_timeout / 2));
                        st.heartbeat.next_ping_at = now + config.ping_interval;
                    }
                    None => {}
                }
            } else if now
                >= st.heartbeat.last_client_ping + config.ping_interval + config.ping_timeout
            {
                timeout = Some(DisconnectReason::PingTimeout);
            }
            let beat = if self.eio >= 4 {
                st.heartbeat
                    .pong_deadline
                    .unwrap_or(st.heartbeat.next_ping_at)
            } else {
                st.heartbeat.last_client_ping + config.ping_interval + config.ping_timeout
            };
            st.heartbeat.connect_deadline.map_or(beat, |c| c.min(beat))
        };
        if let Some(reason) = timeout {
            self.close(reason);
            return None;
        }
        if send_ping {
            self.push_control(Frame::text("2"));
        }
        Some(next)
    }

    /// Restart the ping schedule (a transport takes over the heartbeat).
    pub(crate) fn reset_heartbeat(&self) {
        let mut st = self.lock();
        let now = Instant::now();
        if st.heartbeat.pong_deadline.is_none() {
            st.heartbeat.next_ping_at = st.heartbeat.next_ping_at.max(now);
        }
        st.heartbeat.last_client_ping = now;
    }

    /// A CONNECT arrived: the session now has until the full connect timeout (counted from
    /// its open) to get a socket connected.
    pub(super) fn connect_received(&self) {
        let config = self.host.config();
        let mut st = self.lock();
        if std::mem::replace(&mut st.heartbeat.connect_sent, true) {
            return;
        }
        let extra = config
            .connect_timeout
            .saturating_sub(config.first_connect_timeout);
        if let Some(deadline) = st.heartbeat.connect_deadline.as_mut() {
            *deadline += extra;
        }
    }
}
