//! Pushed subscriptions of local clients: the topic's core writes a subscription's messages
//! into the session's response ring itself, unasked, as DELIVERY frames
//! ([`codec::delivery`]), so a subscriber sends no FETCH and waits for no answer: it reads its
//! ring. A client asks for one with SUBSCRIBE_PUSH on the topic's core
//! ([`CoreContext::subscribe_pushed`]); it ends with UNSUBSCRIBE, or with the session.
//!
//! The slow-subscriber policy is the shard's, as for every subscription: messages wait in the
//! subscription's bounded queue until the session's response ring has room, and when the queue
//! is full the oldest are dropped and counted; the next delivery reports the count. Nothing is
//! taken from the queue before it is in the ring, so nothing is lost in between. A message
//! larger than the session's frames goes in parts (DELIVERY_PART frames, [`codec::delivery_part`]),
//! in order, as the ring has room; it stays in the queue (and counts against its limits) until
//! its last part is in the ring. If the queue's limits drop it meanwhile (they drop the oldest
//! first), its next part is the new oldest message's first, which tells the client to discard
//! what it had. Deliveries wait while older answers wait in the session's backlog (a delivery never
//! overtakes the answer that created its subscription).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::{Rc, Weak};
use std::time::Duration;

use bytes::Bytes;
use veddb_engine::CoreContext;
use veddb_shm::{ByteRing, RingError};
use veddb_wire::shm::codec;
use veddb_wire::{Response, SubscriberId, SubscriberMap};

use super::{disconnect, respond, wake_client, Session, SessionRef, Shared};

/// Largest delivery frame: the messages beyond go in the next frame.
const DELIVERY_FRAME_MAX: usize = 32 << 10;
/// Largest part of a message too large for a frame: smaller than a frame, so that the client
/// copies one part out while the core writes the next.
const PART_MAX: usize = 128 << 10;
/// A part is not written smaller than this (unless it is the message's last): the ring must
/// first have the room.
const PART_MIN: usize = 4 << 10;
/// Delivery frames one session gets per round of its core (fairness between sessions).
const FRAMES_PER_ROUND: usize = 16;
/// The room a response ring needs before a round tries to deliver into it again after it
/// found none: two frames of a small message (a frame that wraps may waste its own size).
const ROOM_MIN: usize =
    2 * ByteRing::frame_bytes(codec::DELIVERY_HEADER_BYTES + codec::DELIVERY_MESSAGE_OVERHEAD + 64);

/// A session's pushed subscriptions on one core.
#[derive(Default)]
pub(super) struct SessionPushes {
    /// Made through this session on this core, not ended yet.
    subscribed: Vec<SubscriberId>,
    /// Those with messages to deliver, in the order they became ready.
    pending: VecDeque<SubscriberId>,
    /// The response ring's free bytes the next delivery needs (set when it found too little).
    room_needed: usize,
    /// Deliveries in a row that found no room (the recheck backs off while its client does
    /// not read).
    no_room: u32,
    /// Subscriptions whose oldest message is partly delivered: that message (a handle: while
    /// it is held its bytes cannot be another message's) and the bytes of it sent.
    parts: Vec<(SubscriberId, Bytes, usize)>,
}

impl SessionPushes {
    /// Whether messages wait for this session's response ring.
    pub(super) fn waiting(&self) -> bool {
        !self.pending.is_empty()
    }

    /// How soon a parked core looks again at a ring that had no room for these messages: 1 ms,
    /// doubling while the client reads nothing, up to 64 ms (a client that stopped reading
    /// costs a wake-up now and then; its messages meanwhile wait, and drop, in the shard).
    pub(super) fn recheck(&self) -> Duration {
        Duration::from_millis(1 << self.no_room.min(6))
    }
}

/// Whether a round would deliver something to `session`: messages wait and its response ring
/// has the room they need (read-only: asked while the core spins).
pub(super) fn deliverable(session: &Session) -> bool {
    session.pushes.waiting()
        && !session.dead
        && session.backlog.is_empty()
        && session.responses.free() >= session.pushes.room_needed.max(ROOM_MIN)
}

/// The session each pushed subscription of a core delivers to.
#[derive(Default)]
pub(super) struct PushRoutes {
    owners: SubscriberMap<Owner>,
    /// Kept between rounds: the subscriptions the engine listed as ready (or ended).
    ready: Vec<SubscriberId>,
}

struct Owner {
    session: Weak<RefCell<Session>>,
    /// In its session's `pending` list.
    queued: bool,
}

/// What one delivery attempt did.
enum Attempt {
    /// A frame went to the ring; whether messages remain.
    Written { more: bool },
    /// Nothing to deliver (the queue is empty, or the subscription ended).
    Nothing,
    /// The ring has not the room (`needed` free bytes) for the next frame.
    NoRoom { needed: usize },
}

impl PushRoutes {
    /// SUBSCRIBE_PUSH `id` of `topic` from `session_ref`: answered `Subscribed` (the answer
    /// records the subscription for the session's end, as every subscription) or the error.
    pub(super) fn subscribe(
        &mut self,
        context: &CoreContext,
        shared: &Shared,
        session_ref: &SessionRef,
        id: u32,
        topic: Bytes,
    ) {
        let response = match context.subscribe_pushed(topic) {
            Ok(subscriber) => {
                self.owners.insert(
                    subscriber,
                    Owner {
                        session: Rc::downgrade(session_ref),
                        queued: false,
                    },
                );
                session_ref.borrow_mut().pushes.subscribed.push(subscriber);
                Response::Subscribed { subscriber }
            }
            Err(error) => Response::Error(error),
        };
        respond(shared, session_ref, id, response);
    }

    /// The session's client unsubscribes `subscriber` (its UNSUBSCRIBE runs next).
    pub(super) fn forget(&mut self, session: &mut Session, subscriber: SubscriberId) {
        let pushes = &mut session.pushes;
        if let Some(at) = pushes.subscribed.iter().position(|s| *s == subscriber) {
            pushes.subscribed.swap_remove(at);
            pushes.pending.retain(|s| *s != subscriber);
            pushes.parts.retain(|(s, _, _)| *s != subscriber);
            self.owners.remove(&subscriber);
        }
    }

    /// The session ended: its subscriptions (which its `Subscriptions` unsubscribe) deliver
    /// nowhere any more.
    pub(super) fn bury(&mut self, session: &mut Session) {
        for subscriber in session.pushes.subscribed.drain(..) {
            self.owners.remove(&subscriber);
        }
        session.pushes.pending.clear();
        session.pushes.parts.clear();
    }

    /// Forgets the subscriptions that ended by an UNSUBSCRIBE that did not come through their
    /// own session on this core (through another core's ring, or another session): their
    /// session no longer holds them.
    pub(super) fn route_ended(&mut self, context: &CoreContext) {
        context.take_push_ended(&mut self.ready);
        for subscriber in self.ready.drain(..) {
            let Some(owner) = self.owners.remove(&subscriber) else {
                continue;
            };
            if let Some(session) = owner.session.upgrade() {
                let mut session = session.borrow_mut();
                let pushes = &mut session.pushes;
                pushes.subscribed.retain(|s| *s != subscriber);
                pushes.pending.retain(|s| *s != subscriber);
                pushes.parts.retain(|(s, _, _)| *s != subscriber);
                session
                    .subscriptions
                    .forget(&veddb_wire::Request::Unsubscribe { subscriber });
            }
        }
    }

    /// The frontend ended: what the engine lists is dropped (no session to deliver to).
    pub(super) fn discard(&mut self, context: &CoreContext) {
        context.take_push_ready(&mut self.ready);
        context.take_push_ended(&mut self.ready);
        self.ready.clear();
    }

    /// Queues each subscription that received messages on its session (once).
    pub(super) fn route_ready(&mut self, context: &CoreContext) {
        context.take_push_ready(&mut self.ready);
        for subscriber in self.ready.drain(..) {
            let Some(owner) = self.owners.get_mut(&subscriber) else {
                // Ended meanwhile.
                continue;
            };
            if owner.queued {
                continue;
            }
            match owner.session.upgrade() {
                Some(session) => {
                    owner.queued = true;
                    session.borrow_mut().pushes.pending.push_back(subscriber);
                }
                None => {
                    self.owners.remove(&subscriber);
                }
            }
        }
    }

    /// Writes the messages waiting for `session`'s pushed subscriptions into its response ring
    /// as far as it has room (and the round's share allows), then wakes its client once;
    /// returns the frames written.
    pub(super) fn deliver(
        &mut self,
        context: &CoreContext,
        shared: &Shared,
        session: &mut Session,
    ) -> usize {
        if !session.pushes.waiting() || session.dead || !session.backlog.is_empty() {
            return 0;
        }
        let mut frames = 0;
        while let Some(&subscriber) = session.pushes.pending.front() {
            if frames == FRAMES_PER_ROUND {
                break;
            }
            match deliver_frame(context, session, subscriber) {
                Ok(Attempt::Written { more }) => {
                    frames += 1;
                    session.pushes.room_needed = 0;
                    session.pushes.no_room = 0;
                    if more {
                        // Its turn again after the others (a busy topic must not starve a
                        // quiet one of the same session).
                        session.pushes.pending.pop_front();
                        session.pushes.pending.push_back(subscriber);
                    } else {
                        self.dequeue(session, subscriber);
                    }
                }
                Ok(Attempt::Nothing) => self.dequeue(session, subscriber),
                Ok(Attempt::NoRoom { needed }) => {
                    session.pushes.room_needed = needed;
                    session.pushes.no_room = session.pushes.no_room.saturating_add(1);
                    break;
                }
                Err(error) => {
                    let detail = error.to_string();
                    disconnect(shared, session, RingError::reason(&error), &detail);
                    break;
                }
            }
        }
        if frames > 0 && !session.dead {
            wake_client(session);
        }
        frames
    }

    /// Takes `subscriber` off the front of the session's pending list.
    fn dequeue(&mut self, session: &mut Session, subscriber: SubscriberId) {
        session.pushes.pending.pop_front();
        if let Some(owner) = self.owners.get_mut(&subscriber) {
            owner.queued = false;
        }
    }
}

/// Writes one delivery frame of `subscriber`'s oldest messages (as many as fit a frame and the
/// ring's room) into `session`'s response ring, then takes them from the queue.
fn deliver_frame(
    context: &CoreContext,
    session: &mut Session,
    subscriber: SubscriberId,
) -> Result<Attempt, RingError> {
    let responses = &mut session.responses;
    let parts = &mut session.pushes.parts;
    let max_payload = responses.ring().max_payload();
    // A frame that wraps may waste up to its own size: half the free room always fits.
    let limit = max_payload
        .min(DELIVERY_FRAME_MAX)
        .min(responses.free() / 2);
    context.with_shard(|shard| loop {
        let part = parts.iter().position(|(s, _, _)| *s == subscriber);
        let Some((queue, dropped)) = shard.pending(subscriber) else {
            if let Some(at) = part {
                parts.swap_remove(at);
            }
            return Ok(Attempt::Nothing);
        };
        if let Some(at) = part {
            // Still the message being sent? The queue's limits drop the oldest (and a FETCH of
            // this subscriber id takes them), so it may be gone: then the new oldest starts at
            // its first part, with the count of what was dropped.
            let (_, message, sent) = &parts[at];
            let same = queue.front().is_some_and(|front| {
                front.as_ptr() == message.as_ptr() && front.len() == message.len()
            });
            if !same || dropped > 0 {
                parts.swap_remove(at);
                continue;
            }
            let sent = *sent;
            return write_part(shard, responses, parts, subscriber, sent, 0);
        }
        if queue.is_empty() && dropped == 0 {
            return Ok(Attempt::Nothing);
        }
        let mut len = codec::DELIVERY_HEADER_BYTES;
        let mut count = 0;
        for message in queue {
            let next = len + codec::DELIVERY_MESSAGE_OVERHEAD + message.len();
            if next > limit {
                break;
            }
            len = next;
            count += 1;
        }
        if count == 0 {
            if let Some(first) = queue.front() {
                let alone =
                    codec::DELIVERY_HEADER_BYTES + codec::DELIVERY_MESSAGE_OVERHEAD + first.len();
                if alone > max_payload {
                    // Larger than any frame of this session: it goes in parts.
                    return write_part(shard, responses, parts, subscriber, 0, dropped);
                }
                // Larger than the room the ring seems to have: tried alone.
                len = alone;
                count = 1;
            }
        }
        let Some(mut frame) = responses.try_reserve(len)? else {
            return Ok(Attempt::NoRoom {
                needed: 2 * ByteRing::frame_bytes(len),
            });
        };
        frame.write_at(
            0,
            &codec::encode_delivery_header(subscriber, dropped, count as u32),
        );
        let mut at = codec::DELIVERY_HEADER_BYTES;
        for message in queue.iter().take(count) {
            frame.write_at(at, &(message.len() as u32).to_le_bytes());
            frame.write_at(at + codec::DELIVERY_MESSAGE_OVERHEAD, message);
            at += codec::DELIVERY_MESSAGE_OVERHEAD + message.len();
        }
        frame.commit();
        let more = queue.len() > count;
        shard.take_delivered(subscriber, count);
        return Ok(Attempt::Written { more });
    })
}

/// Writes the next part of `subscriber`'s oldest message, of which `sent` bytes are in the ring
/// already (`dropped`: the count to report, in a first part), and records how far it got.
fn write_part(
    shard: &mut veddb_shard::Shard,
    responses: &mut veddb_shm::RingProducer,
    parts: &mut Vec<(SubscriberId, Bytes, usize)>,
    subscriber: SubscriberId,
    sent: usize,
    dropped: u64,
) -> Result<Attempt, RingError> {
    let (queue, _) = shard.pending(subscriber).expect("the caller found it");
    let message = queue.front().expect("the caller found one").clone();
    let more_messages = queue.len() > 1;
    let rest = message.len() - sent;
    // A frame that wraps may waste up to its own size: half the free room always fits.
    let room = (responses.ring().max_payload().min(responses.free() / 2))
        .saturating_sub(codec::DELIVERY_PART_HEADER_BYTES)
        .min(PART_MAX);
    let len = rest.min(room);
    // The least part worth a frame: 4 KiB, less on rings whose frames are smaller.
    let part_min = PART_MIN.min(
        responses
            .ring()
            .max_payload()
            .saturating_sub(codec::DELIVERY_PART_HEADER_BYTES),
    );
    // What the next try needs: room for the smallest part this would write (asking for more
    // could ask for more than a small ring ever has free).
    let needed = 2 * ByteRing::frame_bytes(codec::DELIVERY_PART_HEADER_BYTES + rest.min(part_min));
    if len < rest.min(part_min) {
        return Ok(Attempt::NoRoom { needed });
    }
    let Some(mut frame) = responses.try_reserve(codec::DELIVERY_PART_HEADER_BYTES + len)? else {
        return Ok(Attempt::NoRoom { needed });
    };
    frame.write_at(
        0,
        &codec::encode_delivery_part_header(codec::DeliveryPart {
            subscriber,
            dropped,
            total: message.len() as u64,
            offset: sent as u64,
            len: len as u32,
        }),
    );
    frame.write_at(
        codec::DELIVERY_PART_HEADER_BYTES,
        &message[sent..sent + len],
    );
    frame.commit();
    parts.retain(|(s, _, _)| *s != subscriber);
    if len == rest {
        shard.take_delivered(subscriber, 1);
        return Ok(Attempt::Written {
            more: more_messages,
        });
    }
    if sent == 0 {
        // The count went with the first part: clear it (takes no message).
        shard.take_delivered(subscriber, 0);
    }
    parts.push((subscriber, message, sent + len));
    Ok(Attempt::Written { more: true })
}
