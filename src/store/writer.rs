//! The group-commit writer shared by the SQL backends.
//!
//! A task, not a lock: it owns the only write connection and a bounded queue. It waits for one
//! write, takes everything else already queued (up to `max_batch`), applies it all in ONE
//! transaction, commits (one fsync), and only then answers each caller. Under load, many
//! appends share one fsync, so durability does not cap throughput; when idle, a lone append
//! commits at once. A full queue makes writers wait (backpressure), it never drops.
//!
//! Sequences are assigned here, from a counter row per conversation that the batch advances
//! in its own transaction (one multi-row upsert per batch). A failed batch rolls back with its
//! counters, so a sequence is consumed only by a committed message: no gaps, across batches,
//! restarts, and several writers (nodes) sharing one PostgreSQL, which the row locks order.
//! An in-memory cache of last sequences would save that statement but would be wrong the
//! moment a second node writes.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::stats::WriterStats;
use super::{
    Appended, MAX_CLIENT_ID_LEN, MembershipRecord, MessageRow, NameClaim, NewMessage,
    RecoveryRecord, RoomRecord, SessionRecord, StoreError, StoreOptions, StoredMessage, UserRecord,
    message_from_row, parse_direct_key,
};

/// The largest message body the store accepts, in bytes: a backstop far above the chat's own
/// (configurable) limit, so that no caller can make one transaction arbitrarily large.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// Rows per multi-row statement. A power of two: statements are issued in power-of-two sizes
/// only, so each connection prepares at most 9 shapes of them; 256 rows × 8 columns stays far
/// below both backends' limits on bound parameters.
pub(crate) const MAX_ROWS_PER_STATEMENT: usize = 256;

/// An idempotency key: who resent what where.
pub(crate) struct ClientKey<'a> {
    pub(crate) key: &'a str,
    pub(crate) author_id: &'a str,
    pub(crate) client_id: &'a str,
}

/// What a backend does inside the writer's transaction. Implemented once for SQL (the write
/// connection of `sql.rs`, for SQLite and PostgreSQL) and by the tests' fake; only the writer
/// task calls it, one call at a time.
pub(crate) trait WriteConnection: Send + 'static {
    fn begin(&mut self) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn commit(&mut self) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Best effort: the batch has failed already, and the caller reports that error.
    fn rollback(&mut self) -> impl Future<Output = ()> + Send;
    /// Advances the sequence counter of each conversation key by its count (creating counters
    /// at 0) and returns the new last sequences. At most [`MAX_ROWS_PER_STATEMENT`] keys.
    fn reserve_seqs(
        &mut self,
        counts: &[(&str, i64)],
    ) -> impl Future<Output = Result<Vec<(String, i64)>, StoreError>> + Send;
    /// The stored messages matching any of these idempotency keys, with their conversation
    /// keys. At most [`MAX_ROWS_PER_STATEMENT`] keys per call.
    fn find_by_client_ids(
        &mut self,
        keys: &[ClientKey<'_>],
    ) -> impl Future<Output = Result<Vec<(String, MessageRow)>, StoreError>> + Send;
    /// Records (user id, conversation key) memberships of direct conversations, ignoring
    /// those known already. At most [`MAX_ROWS_PER_STATEMENT`] rows per call.
    fn add_direct_members(
        &mut self,
        rows: &[(&str, &str)],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Inserts messages with one statement (any collision is an error). At most
    /// [`MAX_ROWS_PER_STATEMENT`] rows per call.
    fn insert_messages(
        &mut self,
        rows: &[(&str, &StoredMessage)],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn create_room(
        &mut self,
        room: &RoomRecord,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    fn save_session(
        &mut self,
        session: &SessionRecord,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn delete_session(
        &mut self,
        token_hash: &str,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    fn save_recovery(
        &mut self,
        recovery: &RecoveryRecord,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn delete_recovery(
        &mut self,
        pid: &str,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    fn save_user(
        &mut self,
        user: &UserRecord,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn delete_user(
        &mut self,
        user_id: &str,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    fn set_online(
        &mut self,
        user_ids: &[String],
        online: bool,
        node: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// See [`super::HistoryStore::claim_name`]: one statement, whatever other writers do.
    fn claim_name(
        &mut self,
        claim: &NameClaim,
        now_ms: i64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    fn release_name(
        &mut self,
        name_key: &str,
        user_id: &str,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    fn add_membership(
        &mut self,
        membership: &MembershipRecord,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    fn remove_membership(
        &mut self,
        user_id: &str,
        room: &str,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    fn purge_expired(
        &mut self,
        now_ms: i64,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
    fn close(self) -> impl Future<Output = ()> + Send;
}

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// A request to the writer, with where to send its result.
enum WriteOp {
    Append(NewMessage, Reply<Appended>),
    CreateRoom(RoomRecord, Reply<bool>),
    SaveSession(SessionRecord, Reply<()>),
    DeleteSession(String, Reply<bool>),
    SaveRecovery(RecoveryRecord, Reply<()>),
    DeleteRecovery(String, Reply<bool>),
    PurgeExpired(i64, Reply<u64>),
    SaveUser(UserRecord, Reply<()>),
    DeleteUser(String, Reply<bool>),
    SetOnline(Vec<String>, bool, String, Reply<()>),
    ClaimName(NameClaim, i64, Reply<bool>),
    ReleaseName(String, String, Reply<bool>),
    AddMembership(MembershipRecord, Reply<bool>),
    RemoveMembership(String, String, Reply<bool>),
    /// Finish what is queued, then stop.
    Close(oneshot::Sender<()>),
}

/// A write applied in the open transaction, waiting for the commit to be answered.
enum Applied {
    Append(Reply<Appended>, Appended),
    Flag(Reply<bool>, bool),
    Unit(Reply<()>),
    Count(Reply<u64>, u64),
}

impl Applied {
    fn succeed(self) {
        // A caller that stopped waiting (e.g. its client left) is not an error: ignore it.
        let _ = match self {
            Self::Append(reply, value) => reply.send(Ok(value)).is_ok(),
            Self::Flag(reply, value) => reply.send(Ok(value)).is_ok(),
            Self::Unit(reply) => reply.send(Ok(())).is_ok(),
            Self::Count(reply, value) => reply.send(Ok(value)).is_ok(),
        };
    }

    fn fail(self, error: StoreError) {
        let _ = match self {
            Self::Append(reply, _) => reply.send(Err(error)).is_ok(),
            Self::Flag(reply, _) => reply.send(Err(error)).is_ok(),
            Self::Unit(reply) => reply.send(Err(error)).is_ok(),
            Self::Count(reply, _) => reply.send(Err(error)).is_ok(),
        };
    }
}

/// PostgreSQL cannot store NUL in text, and one refused row would fail the whole batch it
/// shares with other callers' writes: refuse it up front, the same way on every backend.
pub(crate) fn reject_nul(texts: &[&str]) -> Result<(), StoreError> {
    if texts.iter().any(|text| text.contains('\0')) {
        return Err(StoreError::InvalidInput("text contains a NUL character"));
    }
    Ok(())
}

/// Refuses a message no store may hold, before it is queued: the same checks on every backend.
pub(crate) fn check_append(message: &NewMessage) -> Result<(), StoreError> {
    if let Some(client_id) = &message.client_id {
        if client_id.is_empty() {
            return Err(StoreError::InvalidInput("client id is empty"));
        }
        if client_id.len() > MAX_CLIENT_ID_LEN {
            return Err(StoreError::InvalidInput("client id is too long"));
        }
    }
    if message.body.len() > MAX_BODY_BYTES {
        return Err(StoreError::InvalidInput("message body is too large"));
    }
    reject_nul(&[
        &message.body,
        &message.author.user_id,
        &message.author.name,
        message.client_id.as_deref().unwrap_or_default(),
        &message.conversation.storage_key(),
    ])
}

/// The stores' side of the writer: a bounded queue into the writer task.
pub(crate) struct WriterHandle {
    queue: mpsc::Sender<WriteOp>,
    /// What the writer did, for metrics.
    pub(crate) stats: Arc<WriterStats>,
    /// Taken by `close` to wait for the task to finish.
    task: Mutex<Option<JoinHandle<()>>>,
}

impl WriterHandle {
    /// Starts the writer task on `connection`.
    pub(crate) fn spawn<C: WriteConnection>(connection: C, options: &StoreOptions) -> Self {
        let (queue, receiver) = mpsc::channel(options.queue_capacity.max(1));
        let stats = Arc::new(WriterStats::default());
        let writer = Writer {
            connection,
            max_batch: options.max_batch.max(1),
            stats: Arc::clone(&stats),
        };
        let task = tokio::spawn(writer.run(receiver));
        Self {
            queue,
            stats,
            task: Mutex::new(Some(task)),
        }
    }

    async fn request<T>(&self, op: impl FnOnce(Reply<T>) -> WriteOp) -> Result<T, StoreError> {
        let (reply, result) = oneshot::channel();
        self.queue
            .send(op(reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        result.await.map_err(|_| StoreError::Closed)?
    }

    pub(crate) async fn append(&self, message: NewMessage) -> Result<Appended, StoreError> {
        self.append_queued(message).await?.await
    }

    /// Validates and queues an append; resolves once queued, to the future of its commit.
    pub(crate) async fn append_queued(
        &self,
        message: NewMessage,
    ) -> Result<super::PendingAppend, StoreError> {
        check_append(&message)?;
        let (reply, result) = oneshot::channel();
        self.queue
            .send(WriteOp::Append(message, reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        Ok(Box::pin(async move {
            result.await.map_err(|_| StoreError::Closed)?
        }))
    }

    pub(crate) async fn create_room(&self, room: RoomRecord) -> Result<bool, StoreError> {
        reject_nul(&[&room.name, room.created_by.as_deref().unwrap_or_default()])?;
        self.request(|reply| WriteOp::CreateRoom(room, reply)).await
    }

    pub(crate) async fn save_session(&self, session: SessionRecord) -> Result<(), StoreError> {
        reject_nul(&[&session.token_hash, &session.user_id, &session.name])?;
        self.request(|reply| WriteOp::SaveSession(session, reply))
            .await
    }

    pub(crate) async fn delete_session(&self, token_hash: String) -> Result<bool, StoreError> {
        if token_hash.contains('\0') {
            return Ok(false);
        }
        self.request(|reply| WriteOp::DeleteSession(token_hash, reply))
            .await
    }

    pub(crate) async fn save_recovery(&self, recovery: RecoveryRecord) -> Result<(), StoreError> {
        reject_nul(&[&recovery.pid, &recovery.user_id, &recovery.state])?;
        self.request(|reply| WriteOp::SaveRecovery(recovery, reply))
            .await
    }

    pub(crate) async fn delete_recovery(&self, pid: String) -> Result<bool, StoreError> {
        if pid.contains('\0') {
            return Ok(false);
        }
        self.request(|reply| WriteOp::DeleteRecovery(pid, reply))
            .await
    }

    pub(crate) async fn purge_expired(&self, now_ms: i64) -> Result<u64, StoreError> {
        self.request(|reply| WriteOp::PurgeExpired(now_ms, reply))
            .await
    }

    pub(crate) async fn save_user(&self, user: UserRecord) -> Result<(), StoreError> {
        reject_nul(&[&user.user_id, &user.name, &user.name_key, &user.node])?;
        self.request(|reply| WriteOp::SaveUser(user, reply)).await
    }

    pub(crate) async fn set_online(
        &self,
        mut user_ids: Vec<String>,
        online: bool,
        node: String,
    ) -> Result<(), StoreError> {
        user_ids.retain(|id| !id.contains('\0'));
        if user_ids.is_empty() {
            return Ok(());
        }
        reject_nul(&[&node])?;
        self.request(|reply| WriteOp::SetOnline(user_ids, online, node, reply))
            .await
    }

    pub(crate) async fn claim_name(
        &self,
        claim: NameClaim,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        reject_nul(&[&claim.name_key, &claim.user_id])?;
        self.request(|reply| WriteOp::ClaimName(claim, now_ms, reply))
            .await
    }

    pub(crate) async fn release_name(
        &self,
        name_key: String,
        user_id: String,
    ) -> Result<bool, StoreError> {
        if name_key.contains('\0') || user_id.contains('\0') {
            return Ok(false);
        }
        self.request(|reply| WriteOp::ReleaseName(name_key, user_id, reply))
            .await
    }

    pub(crate) async fn delete_user(&self, user_id: String) -> Result<bool, StoreError> {
        if user_id.contains('\0') {
            return Ok(false);
        }
        self.request(|reply| WriteOp::DeleteUser(user_id, reply))
            .await
    }

    pub(crate) async fn add_membership(
        &self,
        membership: MembershipRecord,
    ) -> Result<bool, StoreError> {
        reject_nul(&[&membership.user_id, &membership.room])?;
        self.request(|reply| WriteOp::AddMembership(membership, reply))
            .await
    }

    pub(crate) async fn remove_membership(
        &self,
        user_id: String,
        room: String,
    ) -> Result<bool, StoreError> {
        if user_id.contains('\0') || room.contains('\0') {
            return Ok(false);
        }
        self.request(|reply| WriteOp::RemoveMembership(user_id, room, reply))
            .await
    }

    /// Lets the writer commit everything queued before this call, then waits for it to stop.
    pub(crate) async fn close(&self) {
        let (done, finished) = oneshot::channel();
        if self.queue.send(WriteOp::Close(done)).await.is_ok() {
            let _ = finished.await;
        }
        let task = self.task.lock().map(|mut task| task.take()).ok().flatten();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

/// The writer task's state.
struct Writer<C> {
    connection: C,
    max_batch: usize,
    stats: Arc<WriterStats>,
}

impl<C: WriteConnection> Writer<C> {
    async fn run(mut self, mut queue: mpsc::Receiver<WriteOp>) {
        let mut batch = Vec::with_capacity(self.max_batch);
        let mut close_waiters = Vec::new();
        // `recv_many` waits for one write, then takes what else is queued, up to the limit.
        while queue.recv_many(&mut batch, self.max_batch).await > 0 {
            let mut writes = Vec::with_capacity(batch.len());
            for op in batch.drain(..) {
                match op {
                    WriteOp::Close(done) => {
                        // Refuse new writes; those already queued are still committed.
                        queue.close();
                        close_waiters.push(done);
                    }
                    write => writes.push(write),
                }
            }
            if !writes.is_empty() {
                self.commit_batch(writes).await;
            }
        }
        self.connection.close().await;
        for done in close_waiters {
            let _ = done.send(());
        }
    }

    /// Applies `writes` in one transaction and answers each caller after the commit; if
    /// anything fails, every caller of the batch gets the error and nothing is kept.
    ///
    /// Appends are applied together, after the other writes of the batch (they touch other
    /// tables, and all of it commits at once): a few multi-row statements instead of one
    /// statement per message, which is what makes a batch cheap.
    async fn commit_batch(&mut self, writes: Vec<WriteOp>) {
        let mut appends = Vec::new();
        let mut append_replies = Vec::new();
        let mut applied = Vec::with_capacity(writes.len());
        let started = std::time::Instant::now();
        let batch_size = writes.len();
        let mut failure = self.connection.begin().await.err();
        for write in names_first(writes) {
            if let WriteOp::Append(message, reply) = write {
                appends.push(message);
                append_replies.push(reply);
                continue;
            }
            if let Some(error) = &failure {
                fail(write, error.clone());
                continue;
            }
            match self.apply(write).await {
                Ok(done) => applied.push(done),
                Err(error) => failure = Some(error),
            }
        }
        if failure.is_none() && !appends.is_empty() {
            match self.append_all(appends).await {
                Ok(results) => applied.extend(
                    append_replies
                        .drain(..)
                        .zip(results)
                        .map(|(reply, appended)| Applied::Append(reply, appended)),
                ),
                Err(error) => failure = Some(error),
            }
        }
        if failure.is_none() {
            failure = self.connection.commit().await.err();
        }
        match failure {
            None => {
                tracing::trace!(writes = applied.len(), "history batch committed");
                self.stats.batch_size.observe(batch_size as f64);
                self.stats
                    .commit_seconds
                    .observe(started.elapsed().as_secs_f64());
                let stored = applied
                    .iter()
                    .filter(
                        |done| matches!(done, Applied::Append(_, appended) if !appended.duplicate),
                    )
                    .count();
                self.stats
                    .messages_stored
                    .fetch_add(stored as u64, std::sync::atomic::Ordering::Relaxed);
                applied.into_iter().for_each(Applied::succeed);
            }
            Some(error) => {
                tracing::error!(%error, writes = applied.len() + append_replies.len(), "history batch failed, rolled back");
                self.stats
                    .failed_batches
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                // The counters advanced in this batch roll back with it: no gap.
                self.connection.rollback().await;
                for done in applied {
                    done.fail(error.clone());
                }
                for reply in append_replies {
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
    }

    /// Applies one write; on error its caller has been answered already.
    async fn apply(&mut self, write: WriteOp) -> Result<Applied, StoreError> {
        async fn answer<T>(
            reply: Reply<T>,
            result: Result<T, StoreError>,
            done: impl FnOnce(Reply<T>, T) -> Applied,
        ) -> Result<Applied, StoreError> {
            match result {
                Ok(value) => Ok(done(reply, value)),
                Err(error) => {
                    let _ = reply.send(Err(error.clone()));
                    Err(error)
                }
            }
        }
        let connection = &mut self.connection;
        match write {
            WriteOp::Append(_, reply) => {
                // `commit_batch` applies appends together; answering keeps the caller from
                // hanging if that ever changes.
                let _ = reply.send(Err(StoreError::Closed));
                Err(StoreError::Closed)
            }
            WriteOp::CreateRoom(room, reply) => {
                let result = connection.create_room(&room).await;
                answer(reply, result, Applied::Flag).await
            }
            WriteOp::SaveSession(session, reply) => {
                let result = connection.save_session(&session).await;
                answer(reply, result, |reply, ()| Applied::Unit(reply)).await
            }
            WriteOp::DeleteSession(token_hash, reply) => {
                let result = connection.delete_session(&token_hash).await;
                answer(reply, result, Applied::Flag).await
            }
            WriteOp::SaveRecovery(recovery, reply) => {
                let result = connection.save_recovery(&recovery).await;
                answer(reply, result, |reply, ()| Applied::Unit(reply)).await
            }
            WriteOp::DeleteRecovery(pid, reply) => {
                let result = connection.delete_recovery(&pid).await;
                answer(reply, result, Applied::Flag).await
            }
            WriteOp::PurgeExpired(now_ms, reply) => {
                let result = connection.purge_expired(now_ms).await;
                answer(reply, result, Applied::Count).await
            }
            WriteOp::SaveUser(user, reply) => {
                let result = connection.save_user(&user).await;
                answer(reply, result, |reply, ()| Applied::Unit(reply)).await
            }
            WriteOp::DeleteUser(user_id, reply) => {
                let result = connection.delete_user(&user_id).await;
                answer(reply, result, Applied::Flag).await
            }
            WriteOp::SetOnline(user_ids, online, node, reply) => {
                let result = connection.set_online(&user_ids, online, &node).await;
                answer(reply, result, |reply, ()| Applied::Unit(reply)).await
            }
            WriteOp::ClaimName(claim, now_ms, reply) => {
                let result = connection.claim_name(&claim, now_ms).await;
                answer(reply, result, Applied::Flag).await
            }
            WriteOp::ReleaseName(name_key, user_id, reply) => {
                let result = connection.release_name(&name_key, &user_id).await;
                answer(reply, result, Applied::Flag).await
            }
            WriteOp::AddMembership(membership, reply) => {
                let result = connection.add_membership(&membership).await;
                answer(reply, result, Applied::Flag).await
            }
            WriteOp::RemoveMembership(user_id, room, reply) => {
                let result = connection.remove_membership(&user_id, &room).await;
                answer(reply, result, Applied::Flag).await
            }
            WriteOp::Close(done) => {
                // `run` takes Close out of every batch; answering keeps the caller from hanging.
                let _ = done.send(());
                Err(StoreError::Closed)
            }
        }
    }

    /// Registers the members of the direct conversations among `keys` (others are ignored).
    async fn add_direct_members(&mut self, keys: &[String]) -> Result<(), StoreError> {
        let mut rows: Vec<(&str, &str)> = Vec::new();
        for key in keys {
            if let Some((a, b)) = parse_direct_key(key) {
                rows.push((a, key));
                if b != a {
                    rows.push((b, key));
                }
            }
        }
        for chunk in power_of_two_chunks(&rows, MAX_ROWS_PER_STATEMENT) {
            self.connection.add_direct_members(chunk).await?;
        }
        Ok(())
    }

    /// Stores a batch of messages, in order; the results are in the same order.
    async fn append_all(&mut self, messages: Vec<NewMessage>) -> Result<Vec<Appended>, StoreError> {
        let keys: Vec<String> = messages
            .iter()
            .map(|message| message.conversation.storage_key())
            .collect();
        let identity = |index: usize| {
            let message: &NewMessage = &messages[index];
            let client_id = message.client_id.as_deref()?;
            Some((
                keys[index].as_str(),
                message.author.user_id.as_str(),
                client_id,
            ))
        };

        // 1. Messages stored before under the idempotency keys of this batch (resends).
        let wanted: Vec<ClientKey<'_>> = (0..messages.len())
            .filter_map(identity)
            .map(|(key, author_id, client_id)| ClientKey {
                key,
                author_id,
                client_id,
            })
            .collect();
        let mut stored_before: HashMap<(String, String, String), MessageRow> = HashMap::new();
        for chunk in power_of_two_chunks(&wanted, MAX_ROWS_PER_STATEMENT) {
            for (key, row) in self.connection.find_by_client_ids(chunk).await? {
                let client_id = row.5.clone().unwrap_or_default();
                stored_before.insert((key, row.2.clone(), client_id), row);
            }
        }

        // 2. What each message is: a resend of a stored one, a resend of an earlier one in this
        //    batch, or new; and how many new ones each conversation gets.
        enum Kind {
            StoredBefore(MessageRow),
            SameAs(usize),
            New,
        }
        let mut kinds = Vec::with_capacity(messages.len());
        let mut first_in_batch: HashMap<(&str, &str, &str), usize> = HashMap::new();
        let mut new_per_conversation: HashMap<&str, i64> = HashMap::new();
        for (index, key) in keys.iter().enumerate() {
            let id = identity(index);
            // Resends are rare: build the owned lookup key only when there are any.
            let before =
                id.filter(|_| !stored_before.is_empty())
                    .and_then(|(key, author, client)| {
                        let owned = (key.to_owned(), author.to_owned(), client.to_owned());
                        stored_before.get(&owned).cloned()
                    });
            if let Some(row) = before {
                kinds.push(Kind::StoredBefore(row));
            } else if let Some(&first) = id.and_then(|id| first_in_batch.get(&id)) {
                kinds.push(Kind::SameAs(first));
            } else {
                if let Some(id) = id {
                    first_in_batch.insert(id, index);
                }
                *new_per_conversation.entry(key.as_str()).or_default() += 1;
                kinds.push(Kind::New);
            }
        }

        // 3. Take the sequences from the counters, in key order so that writers on several
        //    nodes lock the counter rows in the same order.
        let mut counts: Vec<(&str, i64)> = new_per_conversation.into_iter().collect();
        counts.sort_unstable();
        let mut next_seq: HashMap<String, i64> = HashMap::with_capacity(counts.len());
        let mut new_conversations = Vec::new();
        for chunk in power_of_two_chunks(&counts, MAX_ROWS_PER_STATEMENT) {
            for (key, last) in self.connection.reserve_seqs(chunk).await? {
                let count = chunk
                    .binary_search_by(|(wanted, _)| (*wanted).cmp(key.as_str()))
                    .map_or(0, |found| chunk[found].1);
                if last == count {
                    new_conversations.push(key.clone());
                }
                next_seq.insert(key, last - count + 1);
            }
        }
        // A direct conversation's first messages: register both members, so that each can
        // list it (`direct_conversations`).
        self.add_direct_members(&new_conversations).await?;

        // 4. The stored messages, in queue order.
        drop(first_in_batch);
        let mut results: Vec<Appended> = Vec::with_capacity(messages.len());
        let mut fresh = Vec::new();
        for ((message, key), kind) in messages.into_iter().zip(&keys).zip(kinds) {
            let appended = match kind {
                Kind::StoredBefore(row) => Appended {
                    message: message_from_row(&message.conversation, row),
                    duplicate: true,
                },
                Kind::SameAs(first) => Appended {
                    message: results[first].message.clone(),
                    duplicate: true,
                },
                Kind::New => {
                    let seq = next_seq.get_mut(key).ok_or(StoreError::Conflict(
                        "no sequence reserved for a conversation",
                    ))?;
                    let stored = StoredMessage {
                        id: message_id(message.sent_at_ms),
                        conversation: message.conversation,
                        seq: *seq,
                        author: message.author,
                        body: message.body,
                        client_id: message.client_id,
                        timestamp_ms: message.sent_at_ms,
                    };
                    *seq += 1;
                    fresh.push((key.as_str(), results.len()));
                    Appended {
                        message: stored,
                        duplicate: false,
                    }
                }
            };
            results.push(appended);
        }

        // 5. Insert the new ones, a few statements for the whole batch.
        let rows: Vec<(&str, &StoredMessage)> = fresh
            .iter()
            .map(|&(key, index)| (key, &results[index].message))
            .collect();
        for chunk in power_of_two_chunks(&rows, MAX_ROWS_PER_STATEMENT) {
            self.connection.insert_messages(chunk).await?;
        }
        Ok(results)
    }
}

/// Splits `items` into slices whose lengths are powers of two, at most `max` (itself a power
/// of two), largest first: 37 items → 32, 4, 1.
fn power_of_two_chunks<T>(items: &[T], max: usize) -> impl Iterator<Item = &[T]> {
    let mut rest = items;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let fits = rest.len().min(max);
        let size = 1 << (usize::BITS - 1 - fits.leading_zeros());
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        Some(chunk)
    })
}

/// Placeholders of a multi-row statement: `($1,$2),($3,$4)` (SQLite and PostgreSQL both read
/// `$N`).
pub(crate) fn row_placeholders(rows: usize, columns: usize) -> String {
    let mut sql = String::with_capacity(rows * columns * 4);
    for row in 0..rows {
        sql.push_str(if row == 0 { "(" } else { ",(" });
        for column in 0..columns {
            if column > 0 {
                sql.push(',');
            }
            sql.push_str(&format!("${}", row * columns + column + 1));
        }
        sql.push(')');
    }
    sql
}

/// The batch's writes with the claims and releases of names first, by name key (in queue
/// order for one key), then the others in queue order. Transactions of several writers
/// (nodes) then lock `names` rows in one order and cannot deadlock on them: two batches
/// claiming the same two names in opposite orders would otherwise both fail. Only a name
/// released by forgetting its user (`delete_user`) in the same batch is seen held by a claim
/// that was queued after it.
fn names_first(writes: Vec<WriteOp>) -> Vec<WriteOp> {
    fn name_key(write: &WriteOp) -> Option<&str> {
        match write {
            WriteOp::ClaimName(claim, ..) => Some(&claim.name_key),
            WriteOp::ReleaseName(name_key, ..) => Some(name_key),
            _ => None,
        }
    }
    if !writes.iter().any(|write| name_key(write).is_some()) {
        return writes;
    }
    let (mut names, others): (Vec<_>, Vec<_>) = writes
        .into_iter()
        .partition(|write| name_key(write).is_some());
    // Stable: one key's claims and releases keep their order.
    names.sort_by(|a, b| name_key(a).cmp(&name_key(b)));
    names.extend(others);
    names
}

/// Answers a write that was not applied because its batch failed before it.
fn fail(write: WriteOp, error: StoreError) {
    let _ = match write {
        WriteOp::Append(_, reply) => reply.send(Err(error)).is_ok(),
        WriteOp::CreateRoom(_, reply)
        | WriteOp::DeleteSession(_, reply)
        | WriteOp::DeleteRecovery(_, reply) => reply.send(Err(error)).is_ok(),
        WriteOp::SaveSession(_, reply) | WriteOp::SaveRecovery(_, reply) => {
            reply.send(Err(error)).is_ok()
        }
        WriteOp::PurgeExpired(_, reply) => reply.send(Err(error)).is_ok(),
        WriteOp::SaveUser(_, reply) | WriteOp::SetOnline(_, _, _, reply) => {
            reply.send(Err(error)).is_ok()
        }
        WriteOp::DeleteUser(_, reply)
        | WriteOp::ClaimName(_, _, reply)
        | WriteOp::ReleaseName(_, _, reply)
        | WriteOp::AddMembership(_, reply)
        | WriteOp::RemoveMembership(_, _, reply) => reply.send(Err(error)).is_ok(),
        WriteOp::Close(done) => done.send(()).is_ok(),
    };
}

/// A new message id: a ULID (48 bits of milliseconds, 80 random bits, Crockford base32), so
/// ids are unique without coordination and sort roughly by time.
pub(crate) fn message_id(timestamp_ms: i64) -> String {
    const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let time = u128::try_from(timestamp_ms).unwrap_or(0) & ((1 << 48) - 1);
    let random = rand::random::<u128>() & ((1 << 80) - 1);
    let mut value = (time << 80) | random;
    let mut id = [0u8; 26];
    for digit in id.iter_mut().rev() {
        *digit = ALPHABET[(value & 31) as usize];
        value >>= 5;
    }
    id.iter().map(|&digit| char::from(digit)).collect()
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use tokio::sync::Semaphore;

    use super::*;
    use crate::store::{Author, Conversation};

    #[test]
    fn message_ids_are_26_characters_unique_and_sorted_by_time() {
        let early = message_id(1_000);
        let late = message_id(2_000);
        assert_eq!(early.len(), 26);
        assert!(early < late);
        assert_ne!(message_id(1_000), message_id(1_000));
    }

    #[test]
    fn batches_are_cut_into_power_of_two_statements() {
        let items: Vec<u32> = (0..37).collect();
        let sizes: Vec<usize> = power_of_two_chunks(&items, 16).map(<[u32]>::len).collect();
        assert_eq!(sizes, [16, 16, 4, 1]);
        assert_eq!(power_of_two_chunks(&items[..0], 16).count(), 0);
    }

    #[test]
    fn placeholders_number_rows_and_columns() {
        assert_eq!(row_placeholders(1, 2), "($1,$2)");
        assert_eq!(row_placeholders(2, 3), "($1,$2,$3),($4,$5,$6)");
    }

    /// A database in memory whose commits can be held back or made to fail.
    #[derive(Default)]
    struct FakeDb {
        committed: Vec<(String, StoredMessage)>,
        pending: Vec<(String, StoredMessage)>,
        commits: usize,
        fail_next_commit: bool,
        /// Commits started, including one waiting at the gate.
        commits_started: usize,
        counters: HashMap<String, i64>,
        /// The counters as the open transaction sees them.
        pending_counters: HashMap<String, i64>,
    }

    struct FakeConnection {
        db: Arc<Mutex<FakeDb>>,
        /// Every commit takes a permit: none available holds commits back.
        commit_gate: Arc<Semaphore>,
    }

    impl FakeConnection {
        fn db(&self) -> std::sync::MutexGuard<'_, FakeDb> {
            self.db.lock().expect("fake db lock")
        }
    }

    impl WriteConnection for FakeConnection {
        async fn begin(&mut self) -> Result<(), StoreError> {
            let mut db = self.db();
            db.pending.clear();
            db.pending_counters = db.counters.clone();
            Ok(())
        }
        async fn commit(&mut self) -> Result<(), StoreError> {
            self.db().commits_started += 1;
            self.commit_gate.acquire().await.expect("gate").forget();
            let mut db = self.db();
            if std::mem::take(&mut db.fail_next_commit) {
                return Err(StoreError::Conflict("injected commit failure"));
            }
            let pending = std::mem::take(&mut db.pending);
            db.committed.extend(pending);
            db.counters = std::mem::take(&mut db.pending_counters);
            db.commits += 1;
            Ok(())
        }
        async fn rollback(&mut self) {
            self.db().pending.clear();
        }
        async fn reserve_seqs(
            &mut self,
            counts: &[(&str, i64)],
        ) -> Result<Vec<(String, i64)>, StoreError> {
            let mut db = self.db();
            Ok(counts
                .iter()
                .map(|&(key, count)| {
                    let last = db.pending_counters.entry(key.to_owned()).or_default();
                    *last += count;
                    (key.to_owned(), *last)
                })
                .collect())
        }
        async fn find_by_client_ids(
            &mut self,
            keys: &[ClientKey<'_>],
        ) -> Result<Vec<(String, MessageRow)>, StoreError> {
            let db = self.db();
            let all = db.committed.iter().chain(&db.pending);
            Ok(all
                .filter(|(key, m)| {
                    keys.iter().any(|wanted| {
                        wanted.key == key
                            && wanted.author_id == m.author.user_id
                            && m.client_id.as_deref() == Some(wanted.client_id)
                    })
                })
                .map(|(key, m)| {
                    let row = (
                        m.seq,
                        m.id.clone(),
                        m.author.user_id.clone(),
                        m.author.name.clone(),
                        m.body.clone(),
                        m.client_id.clone(),
                        m.timestamp_ms,
                    );
                    (key.clone(), row)
                })
                .collect())
        }
        async fn insert_messages(
            &mut self,
            rows: &[(&str, &StoredMessage)],
        ) -> Result<(), StoreError> {
            let mut db = self.db();
            for (key, message) in rows {
                db.pending.push(((*key).to_owned(), (*message).clone()));
            }
            Ok(())
        }
        async fn add_direct_members(&mut self, _: &[(&str, &str)]) -> Result<(), StoreError> {
            Ok(())
        }
        async fn create_room(&mut self, _: &RoomRecord) -> Result<bool, StoreError> {
            Ok(true)
        }
        async fn save_session(&mut self, _: &SessionRecord) -> Result<(), StoreError> {
            Ok(())
        }
        async fn delete_session(&mut self, _: &str) -> Result<bool, StoreError> {
            Ok(false)
        }
        async fn save_recovery(&mut self, _: &RecoveryRecord) -> Result<(), StoreError> {
            Ok(())
        }
        async fn delete_recovery(&mut self, _: &str) -> Result<bool, StoreError> {
            Ok(false)
        }
        async fn save_user(&mut self, _: &UserRecord) -> Result<(), StoreError> {
            Ok(())
        }
        async fn delete_user(&mut self, _: &str) -> Result<bool, StoreError> {
            Ok(false)
        }
        async fn set_online(&mut self, _: &[String], _: bool, _: &str) -> Result<(), StoreError> {
            Ok(())
        }
        async fn claim_name(&mut self, _: &NameClaim, _: i64) -> Result<bool, StoreError> {
            Ok(true)
        }
        async fn release_name(&mut self, _: &str, _: &str) -> Result<bool, StoreError> {
            Ok(true)
        }
        async fn add_membership(&mut self, _: &MembershipRecord) -> Result<bool, StoreError> {
            Ok(true)
        }
        async fn remove_membership(&mut self, _: &str, _: &str) -> Result<bool, StoreError> {
            Ok(false)
        }
        async fn purge_expired(&mut self, _: i64) -> Result<u64, StoreError> {
            Ok(0)
        }
        async fn close(self) {}
    }

    fn fake_writer(permits: usize) -> (WriterHandle, Arc<Mutex<FakeDb>>, Arc<Semaphore>) {
        let db = Arc::new(Mutex::new(FakeDb::default()));
        let gate = Arc::new(Semaphore::new(permits));
        let connection = FakeConnection {
            db: db.clone(),
            commit_gate: gate.clone(),
        };
        let handle = WriterHandle::spawn(connection, &StoreOptions::default());
        (handle, db, gate)
    }

    fn message(body: &str, client_id: Option<&str>) -> NewMessage {
        NewMessage {
            conversation: Conversation::room("general"),
            author: Author {
                user_id: "u1".to_owned(),
                name: "ann".to_owned(),
            },
            body: body.to_owned(),
            client_id: client_id.map(str::to_owned),
            sent_at_ms: 1,
        }
    }

    /// Lets other tasks run until `condition` holds; fails the test after 10 s.
    async fn wait_until(condition: impl Fn() -> bool) {
        tokio::time::timeout(Duration::from_secs(10), async {
            while !condition() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("condition not reached in time");
    }

    #[tokio::test]
    async fn a_failed_batch_consumes_no_sequence_and_fails_its_callers() {
        let (writer, db, _gate) = fake_writer(Semaphore::MAX_PERMITS);
        let first = writer.append(message("one", None)).await.expect("append");
        assert_eq!(first.message.seq, 1);

        db.lock().expect("lock").fail_next_commit = true;
        assert!(matches!(
            writer.append(message("lost", Some("c"))).await,
            Err(StoreError::Conflict(_))
        ));
        // The next message takes the sequence the failed one had; its client id is free.
        let retried = writer
            .append(message("lost", Some("c")))
            .await
            .expect("retry");
        assert_eq!((retried.message.seq, retried.duplicate), (2, false));
        let seqs: Vec<i64> = db
            .lock()
            .expect("lock")
            .committed
            .iter()
            .map(|(_, m)| m.seq)
            .collect();
        assert_eq!(seqs, [1, 2]);
        writer.close().await;
    }

    #[tokio::test]
    async fn appends_queued_during_a_commit_share_the_next_commit() {
        const QUEUED: usize = 50;
        let (writer, db, gate) = fake_writer(0);
        let writer = Arc::new(writer);
        // The first append's commit is held back by the gate...
        let first = tokio::spawn({
            let writer = writer.clone();
            async move { writer.append(message("first", None)).await }
        });
        wait_until(|| db.lock().expect("lock").commits_started == 1).await;
        // ...while 50 more are queued behind it.
        let queued: Vec<_> = (0..QUEUED)
            .map(|i| {
                let writer = writer.clone();
                tokio::spawn(async move { writer.append(message(&format!("m{i}"), None)).await })
            })
            .collect();
        wait_until(|| writer.queue.max_capacity() - writer.queue.capacity() == QUEUED).await;
        gate.add_permits(Semaphore::MAX_PERMITS / 2);

        assert_eq!(first.await.expect("task").expect("append").message.seq, 1);
        let mut seqs = Vec::new();
        for task in queued {
            seqs.push(task.await.expect("task").expect("append").message.seq);
        }
        seqs.sort_unstable();
        assert_eq!(seqs, (2..=QUEUED as i64 + 1).collect::<Vec<_>>());
        assert_eq!(
            db.lock().expect("lock").commits,
            2,
            "one commit for all the queued appends"
        );
        writer.close().await;
    }
}
