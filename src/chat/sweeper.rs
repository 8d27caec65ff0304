//! The background tasks [`Chat::start`] spawns: the tutorial's user lists, sent outside the
//! community lock; and every half second the sweep: departures of users whose grace period
//! ended, sockets that closed while connecting, messages whose predecessor never came,
//! tutorial users' name claims (released when they left, refreshed while present), and now
//! and then the purge of expired sessions, recovery records and idle quotas.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use engine::SocketIo;
use tracing::debug;

use super::order::MAX_ORDER_WAIT_MS;
use super::{Chat, deliver, now_ms, now_ms_u64};
use crate::domain::session::TUTORIAL_NAME_REFRESH_MS;
use crate::domain::{Message, UserId};

/// Expired sessions and recovery records are purged every this many sweeps (a minute).
const PURGE_EVERY_TICKS: u64 = 120;

/// How often users whose grace period has run out are announced as gone.
const SWEEP_EVERY: Duration = Duration::from_millis(500);

/// Present tutorial users' name claims are refreshed every this many sweeps.
const TUTORIAL_NAME_REFRESH_TICKS: u64 =
    TUTORIAL_NAME_REFRESH_MS.unsigned_abs() / SWEEP_EVERY.as_millis() as u64;

/// What one sweep found, for the history.
struct Swept {
    /// Sessions (token, user) nobody can ever use.
    unreachable: Vec<(String, UserId)>,
    /// Users whose grace period ended.
    departed: Vec<UserId>,
}

impl Chat {
    /// Hand over the engine once built, and start announcing users whose grace period ends.
    pub fn start(self: &Arc<Self>, io: SocketIo) {
        let _ = self.io.set(io);
        self.start_repairs();
        // The tutorial's user lists: encoded and sent here, never under the community lock.
        let users_out = Arc::clone(&self.users_out);
        let chat: Weak<Chat> = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let names = users_out.next().await;
                let Some(chat) = chat.upgrade() else { return };
                if let Some(io) = chat.io() {
                    deliver::send_users(io, &names);
                }
            }
        });
        let chat: Weak<Chat> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut ticks: u64 = 0;
            loop {
                tick.tick().await;
                let Some(chat) = chat.upgrade() else { return };
                if chat.closing.load(Ordering::Relaxed) {
                    continue;
                }
                let swept = chat.sweep();
                // Queued first, so that a user back right after its departure most likely
                // saves `online` after this write (best effort; a wrong flag only changes who
                // is restored present after the next restart).
                chat.history.mark_offline(swept.departed).await;
                for (token, user) in swept.unreachable {
                    chat.history.forget_user(&token, &user).await;
                    chat.publish_forgotten(&user);
                }
                // Tutorial users whose grace period ended free their names.
                chat.release_departed_tutorial_names().await;
                ticks += 1;
                if ticks.is_multiple_of(TUTORIAL_NAME_REFRESH_TICKS) {
                    chat.refresh_tutorial_names().await;
                }
                if ticks.is_multiple_of(PURGE_EVERY_TICKS) {
                    chat.quotas().forget_idle(now_ms_u64());
                    chat.history.purge_expired(now_ms()).await;
                }
            }
        });
    }

    /// Announce departures; returns who left, and the sessions (token, user) of connections
    /// that closed while connecting and created their user: nobody can ever use them, so
    /// the caller deletes them from history.
    fn sweep(&self) -> Swept {
        let now = now_ms_u64();
        let ghosts = self.unconfirmed_ghosts(now);
        let mut community = self.community();
        let mut notices = Vec::new();
        let mut unreachable = Vec::new();
        for (socket, fresh) in ghosts {
            // Not a ghost after all if its disconnect was handled (it lived, however briefly).
            if community.user_id_of(&socket).is_none() {
                continue;
            }
            debug!(socket = %socket, "socket closed while connecting; forgetting it");
            notices.extend(community.disconnect(&socket, now));
            if let Some((token, user)) = fresh
                && let Some(departures) = community.forget_user(&user)
            {
                notices.extend(departures);
                unreachable.push((token, user));
            }
        }
        // One user list for all the ghosts (`forget_user` leaves it out).
        if !notices.is_empty() {
            notices.extend(community.users_notice());
        }
        let swept = self.presence.expire(&mut community, now);
        notices.extend(swept.notices);
        let departed = swept.departed;
        if !notices.is_empty() {
            self.deliver(&community, None, &notices);
        }
        // Announced gone elsewhere while this node was paused: back, for the other nodes
        // (this node's clients never saw them go).
        let returned: Vec<_> = self
            .presence
            .returned(&community)
            .iter()
            .filter_map(|user| community.presence_of(user))
            .collect();
        self.publish_presence(&returned);
        // A message whose predecessor never came (its sender's task vanished) waits at most
        // this long.
        let overdue: Vec<Message> = self
            .order_lock()
            .values_mut()
            .filter(|order| order.is_waiting())
            .flat_map(|order| order.expire(now, MAX_ORDER_WAIT_MS))
            .collect();
        self.deliver_messages(&community, overdue);
        Swept {
            unreachable,
            departed,
        }
    }
}
