//! One core: its shard, its ends of the mesh, its loop.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::mpsc::{Receiver, SyncSender};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;

use futures_util::future::{join_all, select};
use veddb_shard::{merge_scan_pages, ScanPage, Shard};
use veddb_wire::{limits, Error, Info, Request, Response, Route, SubscriberId, SubscriberMap};

use crate::clock::Clock;
use crate::config::{EXPIRY_BATCH_MAX, PARK_TIMEOUT_MAX};
use crate::doorbell::Doorbell;
use crate::ring::{Consumer, Producer};
use crate::sync::{Arc, AtomicBool, AtomicUsize, Ordering};

mod contention;
mod log;
mod source;

pub use source::CoreSource;

pub(crate) use log::{restore_shard, CoreLog, CoreLogConfig};

/// A request travelling from a core to the owner of its key.
pub(crate) struct RequestMessage {
    id: u32,
    request: Request,
}

/// The answer travelling back.
pub(crate) struct ResponseMessage {
    id: u32,
    response: Response,
}

/// Work handed to a core by a thread outside the engine.
pub(crate) enum External {
    Call {
        request: Request,
        reply: SyncSender<Response>,
    },
    Run(Box<dyn FnOnce(CoreContext) + Send>),
}

/// The parts of a core other threads may touch.
pub(crate) struct CoreShared {
    pub doorbell: Doorbell,
    pub external_pending: AtomicUsize,
    pub stop: AtomicBool,
}

impl CoreShared {
    pub fn new() -> Self {
        CoreShared {
            doorbell: Doorbell::new(),
            external_pending: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        }
    }
}

/// Everything a core thread starts with.
pub(crate) struct CoreWiring {
    pub index: u32,
    pub shard_count: u32,
    pub spin: Duration,
    /// Another core is pinned to this core's CPU (more cores than CPUs): the core gives way
    /// whenever it waits (yields the CPU instead of spinning).
    pub shares_cpu_with_core: bool,
    /// `[peer]`: my requests to `peer`, and `peer`'s responses to them.
    pub outbound: Vec<Option<(Producer<RequestMessage>, Consumer<ResponseMessage>)>>,
    /// `[peer]`: `peer`'s requests to me, and my responses to them.
    pub inbound: Vec<Option<(Consumer<RequestMessage>, Producer<ResponseMessage>)>>,
    pub external: Receiver<External>,
    pub cores: Arc<[CoreShared]>,
    pub clock: std::sync::Arc<dyn Clock>,
}

enum Slot {
    Free,
    Waiting(Option<Waker>),
    Done(Response),
    /// The caller went away; free the slot when the response arrives.
    Abandoned,
}

struct Outbound {
    requests: Producer<RequestMessage>,
    responses: Consumer<ResponseMessage>,
    slots: Vec<Slot>,
    /// Free slot ids. A request is sent only with a free slot, so at most `depth` are in
    /// flight, and the response ring (also `depth` deep) can never be full.
    free: Vec<u32>,
    /// Tasks waiting for a free slot, first come first served: tickets in order, and each
    /// ticket's current waker (updated in place when its task is polled again).
    credit_queue: VecDeque<u64>,
    credit_wakers: HashMap<u64, Waker>,
    next_ticket: u64,
    /// Forwarded FETCHes that may wait at the peer (they hold a slot while they wait), and
    /// which slots they hold.
    waiting_fetches: usize,
    holds_waiting_fetch: Vec<bool>,
}

impl Outbound {
    fn release(&mut self, id: u32) {
        self.slots[id as usize] = Slot::Free;
        if std::mem::take(&mut self.holds_waiting_fetch[id as usize]) {
            self.waiting_fetches -= 1;
        }
        self.free.push(id);
        self.wake_first_waiter();
    }

    /// Wakes the task at the head of the queue if a slot is free. It stays queued until it
    /// takes the slot (or is dropped, which passes the wake on).
    fn wake_first_waiter(&self) {
        if self.free.is_empty() {
            return;
        }
        if let Some(waker) = self
            .credit_queue
            .front()
            .and_then(|t| self.credit_wakers.get(t))
        {
            waker.wake_by_ref();
        }
    }
}

/// Waits for a free slot towards one peer, in arrival order.
struct Credit<'a> {
    state: &'a State,
    link: &'a RefCell<Outbound>,
    ticket: Option<u64>,
}

impl Future for Credit<'_> {
    type Output = u32;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u32> {
        let link = self.link;
        let mut out = link.borrow_mut();
        match self.ticket {
            None => {
                if out.credit_queue.is_empty() {
                    if let Some(id) = out.free.pop() {
                        return Poll::Ready(id);
                    }
                }
                let ticket = out.next_ticket;
                out.next_ticket += 1;
                out.credit_queue.push_back(ticket);
                out.credit_wakers.insert(ticket, cx.waker().clone());
                self.ticket = Some(ticket);
                Poll::Pending
            }
            Some(ticket) => {
                if out.credit_queue.front() == Some(&ticket) {
                    if let Some(id) = out.free.pop() {
                        out.credit_queue.pop_front();
                        out.credit_wakers.remove(&ticket);
                        self.ticket = None;
                        out.wake_first_waiter();
                        return Poll::Ready(id);
                    }
                }
                out.credit_wakers.insert(ticket, cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl Drop for Credit<'_> {
    fn drop(&mut self) {
        let Some(ticket) = self.ticket else { return };
        if self.state.stopped.get() {
            return;
        }
        let Ok(mut out) = self.link.try_borrow_mut() else {
            debug_assert!(false, "credit queue borrowed while a waiter is dropped");
            return;
        };
        let was_first = out.credit_queue.front() == Some(&ticket);
        out.credit_queue.retain(|t| *t != ticket);
        out.credit_wakers.remove(&ticket);
        if was_first {
            out.wake_first_waiter();
        }
    }
}

struct Inbound {
    requests: Consumer<RequestMessage>,
    responses: Producer<ResponseMessage>,
    /// Responses that found the ring full (cannot happen while the credit invariant holds;
    /// kept so a bug degrades into a delay, never a lost answer).
    stalled: VecDeque<ResponseMessage>,
}

struct LocalReply {
    response: RefCell<Option<Response>>,
    waker: RefCell<Option<Waker>>,
}

enum ReplyTo {
    Peer {
        peer: usize,
        id: u32,
    },
    Local(Rc<LocalReply>),
    /// Handed to a frontend's callback, synchronously, from the step that answers (see
    /// [`CoreContext::execute_logged`]).
    Hook(Box<dyn FnOnce(Response)>),
}

struct FetchWaiter {
    max: u32,
    deadline_ms: u64,
    reply: ReplyTo,
}

struct State {
    index: u32,
    shard_count: u32,
    spin: Duration,
    /// See [`CoreWiring::shares_cpu_with_core`].
    shares_cpu_with_core: bool,
    shard: RefCell<Shard>,
    outbound: Vec<Option<RefCell<Outbound>>>,
    inbound: Vec<Option<RefCell<Inbound>>>,
    external: Receiver<External>,
    cores: Arc<[CoreShared]>,
    /// Coarse clock, refreshed every loop iteration.
    now_ms: Cell<u64>,
    /// Peers we pushed responses to since we last rang their doorbells.
    dirty: RefCell<Vec<usize>>,
    fetch_waiters: RefCell<SubscriberMap<FetchWaiter>>,
    fetch_deadlines: RefCell<BTreeSet<(u64, SubscriberId)>>,
    /// Subscriptions whose messages a frontend pushes to its client (see
    /// [`CoreContext::subscribe_pushed`]) instead of waiting FETCHes; whether each is in
    /// `push_ready`.
    pushed: RefCell<SubscriberMap<bool>>,
    /// Pushed subscriptions that received messages since the frontend last took this list.
    push_ready: RefCell<Vec<SubscriberId>>,
    /// Pushed subscriptions that ended (an UNSUBSCRIBE, from whichever core or session) since
    /// the frontend last took this list.
    push_ended: RefCell<Vec<SubscriberId>>,
    /// Inside `poll_inbound` (doorbells are rung at its end) or not (rung at once).
    polling: Cell<bool>,
    /// The loop has ended; the runtime is dropping the remaining tasks.
    stopped: Cell<bool>,
    /// Persistence (`--data-dir`): this shard's write-ahead log and snapshots.
    log: Option<CoreLog>,
    /// Where time comes from.
    clock: std::sync::Arc<dyn Clock>,
    /// What frontends bring into this core's loop (taken out while they are polled).
    sources: RefCell<Vec<Box<dyn CoreSource>>>,
    /// Whether other threads wait for this core's CPU (sampled while it spins).
    contention: RefCell<contention::Contention>,
}

/// A handle to the core the current task runs on. Cheap to clone; not `Send` (it lives on its
/// core's thread, like everything the core owns).
#[derive(Clone)]
pub struct CoreContext(Rc<State>);

impl CoreContext {
    pub(crate) fn new(
        wiring: CoreWiring,
        shard: Shard,
        log: Option<CoreLog>,
        sources: Vec<Box<dyn CoreSource>>,
    ) -> Self {
        let CoreWiring {
            index,
            shard_count,
            spin,
            shares_cpu_with_core,
            outbound,
            inbound,
            external,
            cores,
            clock,
        } = wiring;
        let outbound = outbound
            .into_iter()
            .map(|link| {
                link.map(|(requests, responses)| {
                    let depth = requests.capacity();
                    RefCell::new(Outbound {
                        requests,
                        responses,
                        slots: (0..depth).map(|_| Slot::Free).collect(),
                        free: (0..depth as u32).rev().collect(),
                        credit_queue: VecDeque::new(),
                        credit_wakers: HashMap::new(),
                        next_ticket: 0,
                        waiting_fetches: 0,
                        holds_waiting_fetch: vec![false; depth],
                    })
                })
            })
            .collect();
        let inbound = inbound
            .into_iter()
            .map(|link| {
                link.map(|(requests, responses)| {
                    RefCell::new(Inbound {
                        requests,
                        responses,
                        stalled: VecDeque::new(),
                    })
                })
            })
            .collect();
        CoreContext(Rc::new(State {
            index,
            shard_count,
            spin,
            shares_cpu_with_core,
            shard: RefCell::new(shard),
            outbound,
            inbound,
            external,
            cores,
            now_ms: Cell::new(clock.unix_ms()),
            dirty: RefCell::new(Vec::new()),
            fetch_waiters: RefCell::new(SubscriberMap::default()),
            fetch_deadlines: RefCell::new(BTreeSet::new()),
            pushed: RefCell::new(SubscriberMap::default()),
            push_ready: RefCell::new(Vec::new()),
            push_ended: RefCell::new(Vec::new()),
            polling: Cell::new(false),
            stopped: Cell::new(false),
            log,
            clock,
            sources: RefCell::new(sources),
            contention: RefCell::new(contention::Contention::new()),
        }))
    }

    /// This core's index (and its shard's).
    pub fn index(&self) -> u32 {
        self.0.index
    }

    /// Whether writes go through the write-ahead log (persistence on): their answers wait for
    /// it, so a frontend must not answer them in place (see
    /// [`try_execute_local`](Self::try_execute_local)).
    pub fn logs_writes(&self) -> bool {
        self.0.log.is_some()
    }

    /// Whether this core's loop has ended (the engine is stopping and its runtime is dropping
    /// the remaining tasks): nothing spawned now would run.
    pub fn is_stopped(&self) -> bool {
        self.0.stopped.get()
    }

    /// Number of cores (and shards) in the engine.
    pub fn shard_count(&self) -> u32 {
        self.0.shard_count
    }

    /// The coarse clock (ms since the Unix epoch) the shards see: read once per round of the
    /// core's loop (and by [`refresh_clock`](Self::refresh_clock)).
    pub fn now_ms(&self) -> u64 {
        self.0.now_ms.get()
    }

    /// The engine's monotonic clock, read now (for intervals and deadlines).
    pub fn monotonic(&self) -> Instant {
        self.0.clock.monotonic()
    }

    /// The engine's clock (for a frontend's threads off the core, such as an accept loop).
    pub fn clock(&self) -> &std::sync::Arc<dyn Clock> {
        &self.0.clock
    }

    /// Runs `f` on this core's own shard (for diagnostics and in-process benchmarks).
    pub fn with_shard<R>(&self, f: impl FnOnce(&mut Shard) -> R) -> R {
        f(&mut self.0.shard.borrow_mut())
    }

    /// Requests this core has in flight to `peer` (never more than the inbox depth).
    pub fn in_flight(&self, peer: usize) -> usize {
        self.0.outbound[peer].as_ref().map_or(0, |link| {
            let link = link.borrow();
            link.slots.len() - link.free.len()
        })
    }

    /// Tasks of this core waiting for a free slot towards `peer` (back-pressure).
    pub fn waiting_for_credit(&self, peer: usize) -> usize {
        self.0.outbound[peer]
            .as_ref()
            .map_or(0, |link| link.borrow().credit_queue.len())
    }

    /// Runs `request` wherever it belongs: here, on the owning core (forwarded over the
    /// mesh; waits for a free slot when this core already has `inbox_depth` requests in
    /// flight to that core), or scattered over several cores and gathered.
    pub async fn execute(&self, request: Request) -> Response {
        match request.route(self.0.shard_count) {
            Route::Any => {
                self.refresh_clock();
                self.0.shard.borrow_mut().handle(request, self.now_ms())
            }
            Route::Shard(shard) if shard >= self.0.shard_count => match request {
                // A subscriber id names its shard; one from another instance (or made up)
                // names no shard here.
                Request::Unsubscribe { subscriber } | Request::Fetch { subscriber, .. } => {
                    Response::Error(Error::UnknownSubscriber(subscriber))
                }
                other => Response::Error(Error::InvalidArgument(format!(
                    "{} routes to shard {shard} of {}",
                    other.name(),
                    self.0.shard_count
                ))),
            },
            Route::Shard(shard) => self.execute_on(shard as usize, request).await,
            Route::Scatter => self.scatter(request).await,
        }
    }

    /// Runs `request` on shard `shard` (which must own the keys it names).
    async fn execute_on(&self, shard: usize, request: Request) -> Response {
        if shard == self.0.index as usize {
            self.execute_local(request).await
        } else {
            self.forward(shard, request).await
        }
    }

    /// Reads the clock into the core's coarse clock. Tasks woken by I/O may run while the loop
    /// is parked (the loop refreshes it every round): `execute` calls this itself; callers of
    /// [`try_execute_local`](Self::try_execute_local) call it first.
    pub fn refresh_clock(&self) {
        self.0.now_ms.set(self.0.clock.unix_ms());
    }

    /// Runs `request` at once, without a future, when this core owns it and can answer it
    /// synchronously; otherwise hands it back untouched (another core owns it, it scatters, or
    /// its answer may come later: a waiting FETCH, or, with persistence on, anything the log
    /// must settle first). Use [`execute`](Self::execute) for what comes back. Same effect as
    /// `execute` when it answers (a PUBLISH completes the FETCHes it satisfies and lists the
    /// pushed subscriptions it fed, an UNSUBSCRIBE ends the FETCH that waits on it), except
    /// that it reads no clock: it uses the core's coarse clock as last refreshed, so call
    /// [`refresh_clock`](Self::refresh_clock) first (once for a run of requests handled
    /// together, such as one received chunk).
    pub fn try_execute_local(&self, request: Request) -> Result<Response, Request> {
        match request.route(self.0.shard_count) {
            Route::Shard(shard) if shard == self.0.index && !self.answers_later(&request) => {}
            Route::Any => {}
            _ => return Err(request),
        }
        Ok(self.handle_now(request, self.now_ms()))
    }

    /// Whether `request` is this core's and its answer waits for the write-ahead log (persistence
    /// on: every key-value command, reads included): such a request is best run with
    /// [`execute_logged`](Self::execute_logged).
    pub fn answer_waits_for_log(&self, request: &Request) -> bool {
        self.0.log.is_some()
            && !log::is_unlogged(request)
            && matches!(request.route(self.0.shard_count), Route::Shard(shard) if shard == self.0.index)
    }

    /// Runs `request`, which must be one [`answer_waits_for_log`](Self::answer_waits_for_log)
    /// says yes to, now, and hands its answer to `deliver` from the step that releases it, at
    /// once or when the log is durable that far. Answers the log releases together reach
    /// `deliver` in log order, whichever connection or session they belong to: a task per
    /// answer could let a read's answer overtake the answer of the write it shows, so a client
    /// would see a write its writer has not been told of. `deliver` runs on this core, inside
    /// the engine's step (it must not call back into the engine's log).
    pub fn execute_logged(&self, request: Request, deliver: impl FnOnce(Response) + 'static) {
        debug_assert!(self.answer_waits_for_log(&request));
        self.serve(request, ReplyTo::Hook(Box::new(deliver)));
    }

    /// Whether a request this core owns must go through `serve`: it may answer later (a
    /// waiting FETCH), or, with persistence on, its answer waits for the log.
    fn answers_later(&self, request: &Request) -> bool {
        matches!(request, Request::Fetch { wait_ms: 1.., .. })
            || (self.0.log.is_some() && !log::is_unlogged(request))
    }

    /// Runs a request this core answers now on its shard, then what it completes for others
    /// (see [`After`]).
    fn handle_now(&self, request: Request, now: u64) -> Response {
        let after = After::of(&request);
        let response = self.0.shard.borrow_mut().handle(request, now);
        self.after(after);
        response
    }

    /// What a PUBLISH or an UNSUBSCRIBE that ran completes for others: the FETCHes waiting for
    /// the published messages (and the pushed subscriptions they fed), or the FETCH waiting on
    /// the subscription that ended.
    fn after(&self, after: After) {
        match after {
            After::Publish => self.complete_ready_fetches(),
            After::Unsubscribe(subscriber) => {
                if self.0.pushed.borrow_mut().remove(&subscriber).is_some() {
                    self.0.push_ended.borrow_mut().push(subscriber);
                }
                if let Some(waiter) = self.take_waiter(subscriber) {
                    self.reply(
                        waiter.reply,
                        Response::Error(Error::UnknownSubscriber(subscriber)),
                    );
                }
            }
            After::Nothing => {}
        }
    }

    /// Subscribes to `topic`, which must route to this core's shard, for a frontend that
    /// pushes the messages to its client itself instead of answering FETCHes: whenever the
    /// subscription receives messages (and no FETCH waits on it) it is listed for
    /// [`take_push_ready`](Self::take_push_ready), and the frontend takes them from the shard
    /// (`Shard::pending`, `Shard::take_delivered`) as its client has room. The slow-subscriber
    /// policy is the shard's, as for every subscription: messages wait in the subscription's
    /// bounded queue, and the oldest are dropped (and counted) when it is full. End it with an
    /// UNSUBSCRIBE, as any subscription.
    pub fn subscribe_pushed(&self, topic: Bytes) -> Result<SubscriberId, Error> {
        match veddb_wire::shard_for_key(&topic, self.0.shard_count) {
            shard if shard == self.0.index => {}
            shard => {
                return Err(Error::InvalidArgument(format!(
                    "a pushed subscription is made on its topic's core ({shard}), not on core {}",
                    self.0.index
                )))
            }
        }
        let subscriber = self.0.shard.borrow_mut().subscribe(topic)?;
        self.0.pushed.borrow_mut().insert(subscriber, false);
        Ok(subscriber)
    }

    /// Moves the pushed subscriptions that ended since the last call (by an UNSUBSCRIBE from
    /// anywhere) into `out`, so that their frontend forgets them.
    pub fn take_push_ended(&self, out: &mut Vec<SubscriberId>) {
        let mut ended = self.0.push_ended.borrow_mut();
        if !ended.is_empty() {
            out.append(&mut ended);
        }
    }

    /// Moves the pushed subscriptions that received messages since the last call into `out`,
    /// each once.
    pub fn take_push_ready(&self, out: &mut Vec<SubscriberId>) {
        let mut ready = self.0.push_ready.borrow_mut();
        if ready.is_empty() {
            return;
        }
        let mut pushed = self.0.pushed.borrow_mut();
        for subscriber in ready.drain(..) {
            if let Some(listed) = pushed.get_mut(&subscriber) {
                *listed = false;
                out.push(subscriber);
            }
        }
    }

    async fn execute_local(&self, request: Request) -> Response {
        self.refresh_clock();
        // Requests that may answer later (a waiting FETCH) or that complete other waiters
        // (PUBLISH, UNSUBSCRIBE) go through `serve`; the rest run directly.
        // With persistence on, key-value commands go through `serve` too: their answers wait
        // for the log.
        if self.answers_later(&request) {
            let reply = Rc::new(LocalReply {
                response: RefCell::new(None),
                waker: RefCell::new(None),
            });
            let subscriber = match &request {
                Request::Fetch { subscriber, .. } => Some(*subscriber),
                _ => None,
            };
            self.serve(request, ReplyTo::Local(reply.clone()));
            let mut guard = LocalWait {
                context: self,
                reply,
                subscriber,
            };
            return poll_fn(|cx| {
                let taken = guard.reply.response.borrow_mut().take();
                match taken {
                    Some(response) => {
                        guard.subscriber = None;
                        Poll::Ready(response)
                    }
                    None => {
                        *guard.reply.waker.borrow_mut() = Some(cx.waker().clone());
                        Poll::Pending
                    }
                }
            })
            .await;
        }
        self.handle_now(request, self.now_ms())
    }

    /// Sends `request` to `peer` and waits for its answer.
    async fn forward(&self, peer: usize, request: Request) -> Response {
        let Some(link) = self.0.outbound[peer].as_ref() else {
            debug_assert!(false, "no link to peer {peer}");
            return Response::Error(Error::InvalidArgument(format!("no core {peer}")));
        };
        // Back-pressure: wait for a free slot (a credit), in arrival order.
        let id = Credit {
            state: &self.0,
            link,
            ticket: None,
        }
        .await;
        let mut request = request;
        {
            let mut out = link.borrow_mut();
            // A FETCH that waits at the peer holds its slot meanwhile; at most a quarter of
            // the slots may be held that way, so long polls never starve other traffic. Past
            // that, a FETCH answers at once with what is queued (possibly nothing).
            if let Request::Fetch { wait_ms, .. } = &mut request {
                if *wait_ms > 0 {
                    if out.waiting_fetches < (out.slots.len() / 4).max(1) {
                        out.waiting_fetches += 1;
                        out.holds_waiting_fetch[id as usize] = true;
                    } else {
                        *wait_ms = 0;
                    }
                }
            }
            out.slots[id as usize] = Slot::Waiting(None);
            if out.requests.push(RequestMessage { id, request }).is_err() {
                // Cannot happen: free slots never outnumber free ring entries.
                debug_assert!(false, "request ring full with a free slot");
                out.release(id);
                return Response::Error(Error::InvalidArgument("internal: inbox full".into()));
            }
        }
        self.0.cores[peer].doorbell.ring();
        let guard = SlotGuard {
            state: &self.0,
            link,
            id,
            done: false,
        };
        guard.await
    }

    /// Runs a request that names keys (or shards) of several cores: split by owner, run on
    /// each, gather the answers into one.
    async fn scatter(&self, request: Request) -> Response {
        match request {
            Request::MGet { keys } => self.scatter_mget(keys).await,
            Request::MSet { pairs } => self.scatter_mset(pairs).await,
            Request::Scan {
                cursor,
                prefix,
                count,
            } => self.scatter_scan(cursor, prefix, count).await,
            Request::Info => self.scatter_info().await,
            Request::Snapshot => self.scatter_all_ok(Request::Snapshot).await,
            other => {
                debug_assert!(false, "{} does not scatter", other.name());
                let now = self.now_ms();
                self.0.shard.borrow_mut().handle(other, now)
            }
        }
    }

    /// MGET: the keys grouped by owner (remembering their positions), one MGET per owner,
    /// the values put back in the order asked.
    async fn scatter_mget(&self, keys: Vec<Bytes>) -> Response {
        if keys.len() > limits::BATCH_KEYS_MAX {
            return too_many_keys(keys.len());
        }
        let shard_count = self.0.shard_count;
        let total = keys.len();
        let mut groups: Vec<(Vec<usize>, Vec<Bytes>)> =
            (0..shard_count).map(|_| (Vec::new(), Vec::new())).collect();
        for (position, key) in keys.into_iter().enumerate() {
            let group = &mut groups[veddb_wire::shard_for_key(&key, shard_count) as usize];
            group.0.push(position);
            group.1.push(key);
        }
        let mut parts = Vec::new();
        let mut positions = Vec::new();
        for (shard, (group_positions, group_keys)) in groups.into_iter().enumerate() {
            if !group_keys.is_empty() {
                positions.push(group_positions);
                parts.push(self.execute_on(shard, Request::MGet { keys: group_keys }));
            }
        }
        let mut values = vec![None; total];
        for (response, group_positions) in join_all(parts).await.into_iter().zip(positions) {
            let Response::Values(found) = response else {
                return response;
            };
            for (position, value) in group_positions.into_iter().zip(found) {
                values[position] = value;
            }
        }
        Response::Values(values)
    }

    /// MSET: the pairs grouped by owner, one MSET per owner; OK when every owner said OK.
    async fn scatter_mset(&self, pairs: Vec<(Bytes, Bytes)>) -> Response {
        if pairs.len() > limits::BATCH_KEYS_MAX {
            return too_many_keys(pairs.len());
        }
        let shard_count = self.0.shard_count;
        let mut groups: Vec<Vec<(Bytes, Bytes)>> = (0..shard_count).map(|_| Vec::new()).collect();
        for (key, value) in pairs {
            groups[veddb_wire::shard_for_key(&key, shard_count) as usize].push((key, value));
        }
        let parts = groups
            .into_iter()
            .enumerate()
            .filter(|(_, pairs)| !pairs.is_empty())
            .map(|(shard, pairs)| self.execute_on(shard, Request::MSet { pairs }));
        first_failure(join_all(parts).await)
    }

    /// SCAN: the same page asked of every shard, the pages merged in key order.
    async fn scatter_scan(&self, cursor: Bytes, prefix: Bytes, count: u32) -> Response {
        let parts = (0..self.0.shard_count as usize).map(|shard| {
            let request = Request::Scan {
                cursor: cursor.clone(),
                prefix: prefix.clone(),
                count,
            };
            self.execute_on(shard, request)
        });
        let mut pages = Vec::with_capacity(self.0.shard_count as usize);
        for response in join_all(parts).await {
            let Response::Keys { keys, cursor } = response else {
                return response;
            };
            pages.push(ScanPage {
                keys,
                resume: (!cursor.is_empty()).then_some(cursor),
            });
        }
        let page = merge_scan_pages(pages, count);
        Response::Keys {
            keys: page.keys,
            cursor: page.resume.unwrap_or_default(),
        }
    }

    /// INFO: every shard's figures, in shard order.
    async fn scatter_info(&self) -> Response {
        let parts =
            (0..self.0.shard_count as usize).map(|shard| self.execute_on(shard, Request::Info));
        let mut shards = Vec::with_capacity(self.0.shard_count as usize);
        for response in join_all(parts).await {
            let Response::Info(info) = response else {
                return response;
            };
            shards.extend(info.shards);
        }
        shards.sort_by_key(|s| s.shard);
        Response::Info(Info { shards })
    }

    /// A request every shard runs (SNAPSHOT): OK when every shard said OK.
    async fn scatter_all_ok(&self, request: Request) -> Response {
        let parts =
            (0..self.0.shard_count as usize).map(|shard| self.execute_on(shard, request.clone()));
        first_failure(join_all(parts).await)
    }

    /// Applies a request that routes to this core's shard, answering now or later (a FETCH
    /// that waits for a message).
    fn serve(&self, request: Request, reply: ReplyTo) {
        let now = self.now_ms();
        let state = &self.0;
        match &request {
            Request::Fetch {
                subscriber,
                max,
                wait_ms,
            } if *wait_ms > 0 && state.shard.borrow().has_messages(*subscriber) == Some(false) => {
                let deadline_ms = now.saturating_add((*wait_ms).min(limits::FETCH_WAIT_MS_MAX));
                // One waiting FETCH per subscription: a newer one takes over, the older is
                // answered with what there is (nothing).
                if let Some(previous) = self.take_waiter(*subscriber) {
                    let response = state.shard.borrow_mut().handle(
                        Request::Fetch {
                            subscriber: *subscriber,
                            max: previous.max,
                            wait_ms: 0,
                        },
                        now,
                    );
                    self.reply(previous.reply, response);
                }
                state
                    .fetch_deadlines
                    .borrow_mut()
                    .insert((deadline_ms, *subscriber));
                state.fetch_waiters.borrow_mut().insert(
                    *subscriber,
                    FetchWaiter {
                        max: *max,
                        deadline_ms,
                        reply,
                    },
                );
                if !state.polling.get() {
                    // A local task added a deadline: let a parked loop re-arm its timer.
                    state.cores[state.index as usize].doorbell.ring();
                }
                return;
            }
            _ => {}
        }
        if state.log.is_some() {
            let after = After::of(&request);
            self.serve_logged(request, reply, now);
            self.after(after);
        } else {
            let response = self.handle_now(request, now);
            self.reply(reply, response);
        }
    }

    fn take_waiter(&self, subscriber: SubscriberId) -> Option<FetchWaiter> {
        let waiter = self.0.fetch_waiters.borrow_mut().remove(&subscriber)?;
        self.0
            .fetch_deadlines
            .borrow_mut()
            .remove(&(waiter.deadline_ms, subscriber));
        Some(waiter)
    }

    fn complete_ready_fetches(&self) {
        let now = self.now_ms();
        loop {
            let Some(subscriber) = self.0.shard.borrow_mut().poll_ready_subscribers() else {
                break;
            };
            if let Some(waiter) = self.take_waiter(subscriber) {
                let response = self.0.shard.borrow_mut().handle(
                    Request::Fetch {
                        subscriber,
                        max: waiter.max,
                        wait_ms: 0,
                    },
                    now,
                );
                self.reply(waiter.reply, response);
            } else if let Some(listed) = self.0.pushed.borrow_mut().get_mut(&subscriber) {
                if !*listed {
                    *listed = true;
                    self.0.push_ready.borrow_mut().push(subscriber);
                }
            }
        }
    }

    fn expire_fetch_waiters(&self, now: u64) -> usize {
        let mut expired = 0;
        loop {
            let next = self.0.fetch_deadlines.borrow().first().copied();
            match next {
                Some((deadline_ms, subscriber)) if deadline_ms <= now => {
                    if let Some(waiter) = self.take_waiter(subscriber) {
                        let response = self.0.shard.borrow_mut().handle(
                            Request::Fetch {
                                subscriber,
                                max: waiter.max,
                                wait_ms: 0,
                            },
                            now,
                        );
                        self.reply(waiter.reply, response);
                    } else {
                        self.0
                            .fetch_deadlines
                            .borrow_mut()
                            .remove(&(deadline_ms, subscriber));
                    }
                    expired += 1;
                }
                _ => return expired,
            }
        }
    }

    fn reply(&self, reply: ReplyTo, response: Response) {
        match reply {
            ReplyTo::Local(local) => {
                *local.response.borrow_mut() = Some(response);
                if let Some(waker) = local.waker.borrow_mut().take() {
                    waker.wake();
                }
            }
            ReplyTo::Hook(deliver) => deliver(response),
            ReplyTo::Peer { peer, id } => {
                let Some(link) = self.0.inbound[peer].as_ref() else {
                    debug_assert!(false, "reply to unknown peer {peer}");
                    return;
                };
                let mut link = link.borrow_mut();
                let message = ResponseMessage { id, response };
                if !link.stalled.is_empty() {
                    link.stalled.push_back(message);
                } else if let Err(message) = link.responses.push(message) {
                    debug_assert!(false, "response ring full despite credits");
                    link.stalled.push_back(message);
                }
                drop(link);
                if self.0.polling.get() {
                    self.0.dirty.borrow_mut().push(peer);
                } else {
                    self.0.cores[peer].doorbell.ring();
                }
            }
        }
    }

    /// Does one round of the core's work: the frontends' sources, external requests, peers'
    /// requests, answers to our forwarded requests, timers. Returns how many items it handled.
    /// With `read_clock`, reads the clock into the coarse clock first (else the round keeps the
    /// coarse clock of the last rounds: see `CLOCK_ROUNDS`).
    fn poll_inbound(&self, read_clock: bool) -> usize {
        let state = &self.0;
        if read_clock {
            state.now_ms.set(state.clock.unix_ms());
        }
        let now = state.now_ms.get();
        state.polling.set(true);
        let mut work = self.poll_sources();
        work += self.take_external();
        for peer in 0..state.shard_count as usize {
            work += self.serve_peer(peer);
            work += self.collect_answers(peer);
        }
        self.ring_answered_peers();
        work += self.fire_timers(now);
        state.polling.set(false);
        work
    }

    /// Requests from threads outside the engine ([`Engine::call`](crate::Engine::call),
    /// [`Engine::run_on`](crate::Engine::run_on)).
    fn take_external(&self) -> usize {
        let state = &self.0;
        let me = &state.cores[state.index as usize];
        if me.external_pending.load(Ordering::Acquire) == 0 {
            return 0;
        }
        let mut work = 0;
        while let Ok(job) = state.external.try_recv() {
            me.external_pending.fetch_sub(1, Ordering::AcqRel);
            work += 1;
            match job {
                External::Call { request, reply } => {
                    let context = self.clone();
                    compio::runtime::spawn(async move {
                        let response = context.execute(request).await;
                        let _ = reply.send(response);
                    })
                    .detach();
                }
                External::Run(function) => function(self.clone()),
            }
        }
        work
    }

    /// Requests `peer` forwarded to us: answers that found the ring full go first, then at
    /// most one ring's worth of new requests (fairness between peers).
    fn serve_peer(&self, peer: usize) -> usize {
        let state = &self.0;
        let Some(link) = state.inbound[peer].as_ref() else {
            return 0;
        };
        let depth = {
            let mut link = link.borrow_mut();
            while let Some(message) = link.stalled.pop_front() {
                if let Err(message) = link.responses.push(message) {
                    link.stalled.push_front(message);
                    break;
                }
                state.dirty.borrow_mut().push(peer);
            }
            link.responses.capacity()
        };
        let mut work = 0;
        for _ in 0..depth {
            let Some(message) = link.borrow_mut().requests.pop() else {
                break;
            };
            work += 1;
            state.shard.borrow_mut().note_forwarded();
            let reply = ReplyTo::Peer {
                peer,
                id: message.id,
            };
            self.serve(message.request, reply);
        }
        work
    }

    /// Answers `peer` sent to our forwarded requests: each into its slot, its task woken.
    fn collect_answers(&self, peer: usize) -> usize {
        let Some(link) = self.0.outbound[peer].as_ref() else {
            return 0;
        };
        let mut link = link.borrow_mut();
        let mut work = 0;
        while let Some(ResponseMessage { id, response }) = link.responses.pop() {
            work += 1;
            match std::mem::replace(&mut link.slots[id as usize], Slot::Free) {
                Slot::Waiting(waker) => {
                    link.slots[id as usize] = Slot::Done(response);
                    if let Some(waker) = waker {
                        waker.wake();
                    }
                }
                Slot::Abandoned => link.release(id),
                Slot::Free | Slot::Done(_) => {
                    debug_assert!(false, "response for slot {id} nobody waits for");
                    link.release(id);
                }
            }
        }
        work
    }

    /// Wakes the peers we answered this round (one doorbell per peer per round).
    fn ring_answered_peers(&self) {
        let state = &self.0;
        let mut dirty = state.dirty.borrow_mut();
        if dirty.is_empty() {
            return;
        }
        dirty.sort_unstable();
        dirty.dedup();
        for &peer in dirty.iter() {
            state.cores[peer].doorbell.ring();
        }
        dirty.clear();
    }

    /// Timers that are due: active expiry (bounded per round) and FETCH deadlines.
    fn fire_timers(&self, now: u64) -> usize {
        let state = &self.0;
        let mut work = 0;
        let due = state
            .shard
            .borrow()
            .next_expiry_ms()
            .is_some_and(|at| at <= now);
        if due {
            work += state.shard.borrow_mut().expire_due(now, EXPIRY_BATCH_MAX);
        }
        work + self.expire_fetch_waiters(now)
    }

    /// Polls the frontends' sources, one round each. They are taken out while they run, so a
    /// request they run may do anything with the core (but add a source).
    fn poll_sources(&self) -> usize {
        let mut sources = std::mem::take(&mut *self.0.sources.borrow_mut());
        if sources.is_empty() {
            return 0;
        }
        let work = sources.iter_mut().map(|source| source.poll(self)).sum();
        let mut slot = self.0.sources.borrow_mut();
        debug_assert!(slot.is_empty(), "a source was added while sources ran");
        *slot = sources;
        work
    }

    /// Whether the core, waiting for work, should yield its CPU between polls rather than spin:
    /// another core is pinned to its CPU, a source's client sends from it, or other threads
    /// were seen waiting for it lately.
    fn gives_way(&self, now: Instant) -> bool {
        self.0.shares_cpu_with_core
            || self.client_on_cpu()
            || self.0.contention.borrow_mut().contended(now)
    }

    /// Whether a source's last round served a client on this core's CPU.
    fn client_on_cpu(&self) -> bool {
        self.0
            .sources
            .try_borrow()
            .is_ok_and(|sources| sources.iter().any(|source| source.client_shares_cpu()))
    }

    /// The shortest park timeout any source asks for.
    fn sources_park_timeout(&self) -> Duration {
        self.0
            .sources
            .borrow()
            .iter()
            .filter_map(|source| source.park_timeout())
            .min()
            .unwrap_or(PARK_TIMEOUT_MAX)
    }

    /// Tells every source the core is about to park (`true`) or is awake (`false`).
    fn park_sources(&self, parking: bool) {
        for source in self.0.sources.borrow_mut().iter_mut() {
            if parking {
                source.prepare_park();
            } else {
                source.cancel_park();
            }
        }
    }

    /// Whether a source's producer woke the parked core (and registers `cx` with every source).
    fn poll_source_wakes(&self, cx: &mut Context<'_>) -> bool {
        let mut woken = false;
        for source in self.0.sources.borrow_mut().iter_mut() {
            woken |= source.poll_wake(cx).is_ready();
        }
        woken
    }

    /// Whether anything is waiting for `poll_inbound` (read without taking it).
    fn has_inbound(&self) -> bool {
        let state = &self.0;
        // A source's own work, or messages for pushed subscriptions published by a task or a
        // peer's forward since the sources were polled (their frontend pushes them at its next
        // poll).
        if state.sources.try_borrow().is_ok_and(|sources| {
            !sources.is_empty()
                && (!state.push_ready.borrow().is_empty()
                    || sources.iter().any(|source| source.has_work()))
        }) {
            return true;
        }
        if state.cores[state.index as usize]
            .external_pending
            .load(Ordering::SeqCst)
            != 0
        {
            return true;
        }
        for peer in 0..state.shard_count as usize {
            if let Some(link) = state.inbound[peer].as_ref() {
                let link = link.borrow();
                if link.requests.has_items() || !link.stalled.is_empty() {
                    return true;
                }
            }
            if let Some(link) = state.outbound[peer].as_ref() {
                if link.borrow().responses.has_items() {
                    return true;
                }
            }
        }
        false
    }

    fn stop_requested(&self) -> bool {
        self.0.cores[self.0.index as usize]
            .stop
            .load(Ordering::Acquire)
    }

    /// Milliseconds until the next timer this core must fire (expiry, FETCH deadline).
    fn next_timer(&self, now: u64) -> Duration {
        let expiry = self.0.shard.borrow().next_expiry_ms();
        let fetch = self.0.fetch_deadlines.borrow().first().map(|(at, _)| *at);
        let next = [expiry, fetch].into_iter().flatten().min();
        match next {
            Some(at) => Duration::from_millis(at.saturating_sub(now)).min(PARK_TIMEOUT_MAX),
            None => PARK_TIMEOUT_MAX,
        }
    }

    /// The core's loop: work while there is work, spin briefly when there is none, then park.
    pub(crate) async fn run(self) {
        if self.0.log.is_some() {
            compio::runtime::spawn(self.clone().run_log()).detach();
            compio::runtime::spawn(self.clone().run_snapshots()).detach();
        }
        let mut idle_since: Option<Instant> = None;
        // Rounds and work since the runtime last polled its I/O, and empty spin slices in a
        // row (see `DRIVER_ROUNDS`).
        let mut rounds = 0usize;
        let mut worked = 0usize;
        let mut empty_slices = 0usize;
        // Rounds and items since the coarse clock was last read; `None`: read it next round
        // (after the runtime ran other tasks, or the core parked).
        let mut clock_age: Option<(usize, usize)> = None;
        loop {
            let (rounds_old, items_old) = clock_age.unwrap_or((CLOCK_ROUNDS, 0));
            let read_clock = rounds_old >= CLOCK_ROUNDS || items_old >= CLOCK_WORK;
            let work = self.poll_inbound(read_clock);
            clock_age = Some(if read_clock {
                (1, work)
            } else {
                (rounds_old + 1, items_old + work)
            });
            if self.stop_requested() {
                break;
            }
            if work > 0 {
                idle_since = None;
                empty_slices = 0;
                rounds += 1;
                worked += work;
                if rounds < DRIVER_ROUNDS && worked < DRIVER_WORK {
                    // Tasks this round woke (answers from other cores, spawned requests) run
                    // now; the I/O driver waits for a later round (no syscall per request).
                    run_ready_tasks();
                    if self.client_on_cpu() {
                        // The client this round answered runs on this CPU and waits: hand it
                        // the CPU now rather than after one more (empty) round.
                        std::thread::yield_now();
                    }
                    continue;
                }
                (rounds, worked) = (0, 0);
                yield_now().await;
                clock_age = None;
                continue;
            }
            let now = self.monotonic();
            let since = *idle_since.get_or_insert(now);
            if now.duration_since(since) < self.0.spin {
                // A short busy-wait without a syscall; work that arrives in it is served at
                // once. The runtime polls its I/O when that is due by rounds, or after
                // `DRIVER_EMPTY_SLICES` empty slices in a row.
                let until = now + DRIVER_SLICE;
                let mut arrived = false;
                // Sharing the CPU with whom the core waits for (a local client, or another
                // core): yield it between polls, so that they run, instead of spinning.
                let give_way = self.gives_way(now);
                // The clock is read once every few polls: a request that arrives is seen by
                // the next poll, not after a clock read.
                'slice: while self.monotonic() < until {
                    for _ in 0..SPIN_POLLS_PER_CLOCK {
                        if give_way {
                            std::thread::yield_now();
                        } else {
                            std::hint::spin_loop();
                        }
                        if self.has_inbound() {
                            arrived = true;
                            break 'slice;
                        }
                    }
                }
                // (The round that serves what arrived counts it.)
                if arrived {
                    empty_slices = 0;
                } else {
                    empty_slices += 1;
                }
                if rounds < DRIVER_ROUNDS
                    && worked < DRIVER_WORK
                    && empty_slices < DRIVER_EMPTY_SLICES
                {
                    run_ready_tasks();
                    continue;
                }
                (rounds, worked, empty_slices) = (0, 0, 0);
                yield_now().await;
                clock_age = None;
                continue;
            }
            empty_slices = 0;
            (rounds, worked) = (0, 0);
            self.0.contention.borrow_mut().parked();
            let timeout = self
                .next_timer(self.now_ms())
                .min(self.sources_park_timeout());
            let park = Park {
                context: self.clone(),
                armed: false,
            };
            let sleep = std::pin::pin!(compio::time::sleep(timeout));
            let _ = select(park, sleep).await;
            self.0.cores[self.0.index as usize].doorbell.cancel_park();
            self.park_sources(false);
            idle_since = None;
            // A park that ends at once (a source that says it has work it then cannot do)
            // must not keep the runtime from its I/O and other tasks.
            yield_now().await;
            clock_age = None;
        }
        // Stopping: the sources end their sessions first (they may still ask the core to run
        // clean-up requests, answered below like every other waiting call).
        let mut sources = std::mem::take(&mut *self.0.sources.borrow_mut());
        for source in sources.iter_mut() {
            source.stop(&self);
        }
        drop(sources);
        // Stopping: drain the log (held answers are released as it settles), then answer
        // what still waits so no caller hangs.
        if self.0.log.is_some() {
            self.close_log().await;
        }
        self.0.polling.set(true);
        while let Ok(job) = self.0.external.try_recv() {
            if let External::Call { reply, .. } = job {
                let _ = reply.send(Response::Error(Error::ShuttingDown));
            }
        }
        let waiters: Vec<SubscriberId> = self.0.fetch_waiters.borrow().keys().copied().collect();
        for subscriber in waiters {
            if let Some(waiter) = self.take_waiter(subscriber) {
                self.reply(waiter.reply, Response::Error(Error::ShuttingDown));
            }
        }
        let mut dirty = self.0.dirty.borrow_mut();
        for &peer in dirty.iter() {
            self.0.cores[peer].doorbell.ring();
        }
        dirty.clear();
        self.0.stopped.set(true);
    }
}

/// What a request completes for others once it ran.
enum After {
    Nothing,
    Publish,
    Unsubscribe(SubscriberId),
}

impl After {
    fn of(request: &Request) -> After {
        match request {
            Request::Publish { .. } => After::Publish,
            Request::Unsubscribe { subscriber } => After::Unsubscribe(*subscriber),
            _ => After::Nothing,
        }
    }
}

/// OK, or the first answer of `responses` that is not.
fn first_failure(responses: Vec<Response>) -> Response {
    responses
        .into_iter()
        .find(|response| *response != Response::Ok)
        .unwrap_or(Response::Ok)
}

fn too_many_keys(count: usize) -> Response {
    Response::Error(Error::InvalidArgument(format!(
        "{count} keys in one request; the maximum is {}",
        limits::BATCH_KEYS_MAX
    )))
}

/// Waits for a forwarded request's answer; if dropped first, leaves the slot to be freed when
/// the answer arrives.
struct SlotGuard<'a> {
    state: &'a State,
    link: &'a RefCell<Outbound>,
    id: u32,
    done: bool,
}

impl Future for SlotGuard<'_> {
    type Output = Response;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Response> {
        let mut out = self.link.borrow_mut();
        let id = self.id as usize;
        match std::mem::replace(&mut out.slots[id], Slot::Free) {
            Slot::Done(response) => {
                out.release(self.id);
                drop(out);
                self.done = true;
                Poll::Ready(response)
            }
            Slot::Waiting(_) => {
                out.slots[id] = Slot::Waiting(Some(cx.waker().clone()));
                Poll::Pending
            }
            other => {
                out.slots[id] = other;
                debug_assert!(false, "slot in unexpected state");
                Poll::Pending
            }
        }
    }
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        // Once the core has stopped, its runtime is dropping every task: free nothing and
        // wake nobody.
        if self.done || self.state.stopped.get() {
            return;
        }
        let Ok(mut out) = self.link.try_borrow_mut() else {
            debug_assert!(false, "outbound link borrowed while a request is dropped");
            return;
        };
        let id = self.id as usize;
        match std::mem::replace(&mut out.slots[id], Slot::Abandoned) {
            Slot::Done(_) => out.release(self.id),
            Slot::Waiting(_) | Slot::Abandoned => {}
            Slot::Free => out.slots[id] = Slot::Free,
        }
    }
}

/// Resolves when the core's doorbell rings (or at once if work arrived meanwhile).
struct Park {
    context: CoreContext,
    armed: bool,
}

impl Future for Park {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let context = self.context.clone();
        let state = &context.0;
        let doorbell = &state.cores[state.index as usize].doorbell;
        if self.armed {
            // Woken (or polled again by `select`): done if there is work. Otherwise stay
            // parked: the doorbell and the sources hold this task's waker already (the park
            // never moves to another task), so there is nothing to register again.
            if !doorbell.is_parked()
                || context.poll_source_wakes(cx)
                || context.has_inbound()
                || context.stop_requested()
            {
                doorbell.cancel_park();
                return Poll::Ready(());
            }
            return Poll::Pending;
        }
        doorbell.prepare_park(cx.waker());
        // `prepare_park` fenced after the doorbell's flag; the sources' flags get their own
        // fence before the re-check below.
        context.park_sources(true);
        crate::sync::fence(Ordering::SeqCst);
        self.armed = true;
        if context.has_inbound() || context.stop_requested() || context.poll_source_wakes(cx) {
            doorbell.cancel_park();
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

/// While work flows, the core loop lets the runtime poll its I/O (a syscall) once every this
/// many rounds, or sooner once [`DRIVER_WORK`] items were served; between, it runs the tasks
/// its rounds woke without entering the kernel. At about a microsecond a round, I/O (gRPC, the
/// log) waits at most about a hundred microseconds behind a flood of local requests, and a
/// request costs the core under 0.01 syscalls.
const DRIVER_ROUNDS: usize = 128;
/// See [`DRIVER_ROUNDS`].
const DRIVER_WORK: usize = 256;
/// While work flows (the core neither parks nor lets the runtime run), the core reads the clock
/// into its coarse clock once every this many rounds, or sooner once [`CLOCK_WORK`] items were
/// served: at most a few tens of microseconds stale, against a clock of milliseconds, and no
/// clock read per request.
const CLOCK_ROUNDS: usize = 16;
/// See [`CLOCK_ROUNDS`].
const CLOCK_WORK: usize = 64;
/// An idle core busy-waiting polls its queues and sources this many times between looks at
/// the clock (a clock read costs about as much as a poll: 30 ns here).
const SPIN_POLLS_PER_CLOCK: usize = 8;
/// An idle core busy-waits in slices of this long.
const DRIVER_SLICE: Duration = Duration::from_micros(2);
/// The runtime polls its I/O after this many empty slices in a row (about 32 µs of spinning
/// with nothing to do): the short gaps between one client's requests cost no syscall.
const DRIVER_EMPTY_SLICES: usize = 16;

/// Runs the tasks that are ready on this thread's runtime, without polling its I/O driver.
fn run_ready_tasks() {
    // Called from the core's loop, the future the runtime blocks on: not from inside a task,
    // so the executor is not running.
    let _ = compio::runtime::Runtime::try_with_current(|runtime| runtime.run());
}

/// Lets the runtime run other tasks and poll its I/O once, then continues (for tasks on a core
/// that poll something the runtime cannot wait on, like a frontend's shared-memory rings).
pub fn yield_now() -> impl Future<Output = ()> {
    let mut yielded = false;
    poll_fn(move |cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
}

/// A local FETCH that waits: if its caller goes away first, the waiter is withdrawn so a
/// later PUBLISH does not hand messages to nobody.
struct LocalWait<'a> {
    context: &'a CoreContext,
    reply: Rc<LocalReply>,
    subscriber: Option<SubscriberId>,
}

impl Drop for LocalWait<'_> {
    fn drop(&mut self) {
        let Some(subscriber) = self.subscriber else {
            return;
        };
        if self.context.0.stopped.get() || self.reply.response.borrow().is_some() {
            return;
        }
        let is_ours = self.context.0.fetch_waiters.borrow().get(&subscriber).is_some_and(
            |waiter| matches!(&waiter.reply, ReplyTo::Local(reply) if Rc::ptr_eq(reply, &self.reply)),
        );
        if is_ours {
            self.context.take_waiter(subscriber);
        }
    }
}
