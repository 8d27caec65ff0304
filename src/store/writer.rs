//! The group-commit writer shared by every backend.
//!
//! A task, not a lock: it owns the only write connection and a bounded queue. It waits for one
//! write, takes everything else already queued (up to `max_batch`), applies it all in ONE
//! transaction, commits (one fsync), and only then answers each caller. Under load, many
//! appends share one fsync, so durability does not cap throughput; when idle, a lone append
//! commits at once. A full queue makes writers wait (backpressure), it never drops.
//!
//! Sequences are assigned here, from a cache of the last sequence of each conversation that is
//! loaded from the database on first use. A failed batch is rolled back and the cache is
//! dropped, so a sequence is consumed only by a committed message: no gaps, across batches and
//! restarts.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::{
    Appended, Conversation, MAX_CLIENT_ID_LEN, NewMessage, RecoveryRecord, RoomRecord,
    SessionRecord, StoreError, StoreOptions, StoredMessage,
};

/// The largest message body the store accepts, in bytes: a backstop far above the chat's own
/// (configurable) limit, so that no caller can make one transaction arbitrarily large.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// Conversations whose last sequence is cached; past this the cache starts over (it is only a
/// cache: the database has the truth, and this writer is its only writer).
const MAX_CACHED_CONVERSATIONS: usize = 100_000;

/// What a backend does inside the writer's transaction. Implemented by the SQLite and
/// PostgreSQL write connections; only the writer task calls it, one call at a time.
pub(crate) trait WriteConnection: Send + 'static {
    fn begin(&mut self) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn commit(&mut self) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Best effort: the batch has failed already, and the caller reports that error.
    fn rollback(&mut self) -> impl Future<Output = ()> + Send;
    /// The last committed sequence of a conversation, 0 if none.
    fn last_seq(&mut self, key: &str) -> impl Future<Output = Result<i64, StoreError>> + Send;
    /// Inserts a message; `false` if its `client_id` is taken by the same author in the same
    /// conversation (nothing inserted). Any other collision is an error.
    fn insert_message(
        &mut self,
        key: &str,
        message: &StoredMessage,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    fn find_by_client_id(
        &mut self,
        conversation: &Conversation,
        key: &str,
        author_id: &str,
        client_id: &str,
    ) -> impl Future<Output = Result<Option<StoredMessage>, StoreError>> + Send;
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

/// The stores' side of the writer: a bounded queue into the writer task.
pub(crate) struct WriterHandle {
    queue: mpsc::Sender<WriteOp>,
    /// Taken by `close` to wait for the task to finish.
    task: Mutex<Option<JoinHandle<()>>>,
}

impl WriterHandle {
    /// Starts the writer task on `connection`.
    pub(crate) fn spawn<C: WriteConnection>(connection: C, options: &StoreOptions) -> Self {
        let (queue, receiver) = mpsc::channel(options.queue_capacity.max(1));
        let writer = Writer {
            connection,
            last_seqs: HashMap::new(),
            max_batch: options.max_batch.max(1),
        };
        let task = tokio::spawn(writer.run(receiver));
        Self {
            queue,
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
        let texts = [
            message.body.as_str(),
            &message.author.user_id,
            &message.author.name,
            message.client_id.as_deref().unwrap_or_default(),
        ];
        if texts.iter().any(|text| text.contains('\0'))
            || message.conversation.storage_key().contains('\0')
        {
            return Err(StoreError::InvalidInput("text contains a NUL character"));
        }
        self.request(|reply| WriteOp::Append(message, reply)).await
    }

    pub(crate) async fn create_room(&self, room: RoomRecord) -> Result<bool, StoreError> {
        self.request(|reply| WriteOp::CreateRoom(room, reply)).await
    }

    pub(crate) async fn save_session(&self, session: SessionRecord) -> Result<(), StoreError> {
        self.request(|reply| WriteOp::SaveSession(session, reply))
            .await
    }

    pub(crate) async fn delete_session(&self, token_hash: String) -> Result<bool, StoreError> {
        self.request(|reply| WriteOp::DeleteSession(token_hash, reply))
            .await
    }

    pub(crate) async fn save_recovery(&self, recovery: RecoveryRecord) -> Result<(), StoreError> {
        self.request(|reply| WriteOp::SaveRecovery(recovery, reply))
            .await
    }

    pub(crate) async fn delete_recovery(&self, pid: String) -> Result<bool, StoreError> {
        self.request(|reply| WriteOp::DeleteRecovery(pid, reply))
            .await
    }

    pub(crate) async fn purge_expired(&self, now_ms: i64) -> Result<u64, StoreError> {
        self.request(|reply| WriteOp::PurgeExpired(now_ms, reply))
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
    /// Last committed (or, inside a batch, applied) sequence per conversation storage key.
    last_seqs: HashMap<String, i64>,
    max_batch: usize,
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
    async fn commit_batch(&mut self, writes: Vec<WriteOp>) {
        let mut applied = Vec::with_capacity(writes.len());
        let mut failure = self.connection.begin().await.err();
        for write in writes {
            if let Some(error) = &failure {
                fail(write, error.clone());
                continue;
            }
            match self.apply(write).await {
                Ok(done) => applied.push(done),
                Err(error) => failure = Some(error),
            }
        }
        if failure.is_none() {
            failure = self.connection.commit().await.err();
        }
        match failure {
            None => applied.into_iter().for_each(Applied::succeed),
            Some(error) => {
                tracing::error!(%error, writes = applied.len(), "history batch failed, rolled back");
                self.connection.rollback().await;
                // Sequences applied in this batch were not committed: reload them.
                self.last_seqs.clear();
                for done in applied {
                    done.fail(error.clone());
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
            WriteOp::Append(message, reply) => {
                let result = self.append(message).await;
                answer(reply, result, Applied::Append).await
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
            WriteOp::Close(done) => {
                // `run` takes Close out of every batch; answering keeps the caller from hanging.
                let _ = done.send(());
                Err(StoreError::Closed)
            }
        }
    }

    async fn append(&mut self, message: NewMessage) -> Result<Appended, StoreError> {
        let key = message.conversation.storage_key();
        let last = match self.last_seqs.get(&key) {
            Some(&seq) => seq,
            None => self.connection.last_seq(&key).await?,
        };
        if self.last_seqs.len() >= MAX_CACHED_CONVERSATIONS {
            // Safe mid-batch: the transaction reads its own writes when a key is reloaded.
            self.last_seqs.clear();
        }
        let stored = StoredMessage {
            id: message_id(message.sent_at_ms),
            conversation: message.conversation,
            seq: last + 1,
            author: message.author,
            body: message.body,
            client_id: message.client_id,
            timestamp_ms: message.sent_at_ms,
        };
        if self.connection.insert_message(&key, &stored).await? {
            self.last_seqs.insert(key, stored.seq);
            return Ok(Appended {
                message: stored,
                duplicate: false,
            });
        }
        // The client id was stored before (maybe earlier in this very batch): a resend.
        self.last_seqs.insert(key.clone(), last);
        let client_id = stored.client_id.as_deref().unwrap_or_default();
        let original = self
            .connection
            .find_by_client_id(
                &stored.conversation,
                &key,
                &stored.author.user_id,
                client_id,
            )
            .await?;
        match original {
            Some(message) => Ok(Appended {
                message,
                duplicate: true,
            }),
            None => Err(StoreError::Conflict(
                "insert refused but no original message found",
            )),
        }
    }
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
        WriteOp::Close(done) => done.send(()).is_ok(),
    };
}

/// A new message id: a ULID (48 bits of milliseconds, 80 random bits, Crockford base32), so
/// ids are unique without coordination and sort roughly by time.
fn message_id(timestamp_ms: i64) -> String {
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
    use super::message_id;

    #[test]
    fn message_ids_are_26_characters_unique_and_sorted_by_time() {
        let early = message_id(1_000);
        let late = message_id(2_000);
        assert_eq!(early.len(), 26);
        assert!(early < late);
        assert_ne!(message_id(1_000), message_id(1_000));
    }
}
