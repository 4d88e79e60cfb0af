//! The topic registry: subscriptions with bounded queues.
//!
//! Slow-subscriber policy: **drop oldest, with a counter**. A publish never blocks and never
//! fails because a subscriber is slow; when a subscriber's queue is over its message or byte
//! limit, its oldest messages are dropped and counted, and the next FETCH reports how many
//! were lost (`dropped`), so the subscriber knows it has a gap.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use veddb_wire::{limits, Error, SubscriberId, SubscriberMap};

use crate::config::Config;

struct Subscriber {
    topic: Bytes,
    queue: VecDeque<Bytes>,
    queue_bytes: usize,
    /// Dropped since the last fetch.
    dropped: u64,
    /// Listed in `Topics::ready` (so the list never holds an id twice).
    in_ready: bool,
}

#[derive(Default, Clone, Copy)]
pub(crate) struct TopicCounters {
    pub topics: u64,
    pub subscribers: u64,
    pub published: u64,
    pub delivered: u64,
    pub dropped: u64,
}

pub(crate) struct Topics {
    shard: u32,
    next_sequence: u64,
    by_topic: HashMap<Bytes, Vec<SubscriberId>>,
    subscribers: SubscriberMap<Subscriber>,
    /// Subscriptions whose queue became non-empty, not yet reported.
    ready: Vec<SubscriberId>,
    queue_messages_max: usize,
    queue_bytes_max: usize,
    /// All queues of this shard together.
    shard_queue_bytes: usize,
    shard_queue_bytes_max: usize,
    subscribers_max: usize,
    counters: TopicCounters,
}

impl Topics {
    pub fn new(shard: u32, config: &Config) -> Self {
        Topics {
            shard,
            next_sequence: 1,
            by_topic: HashMap::new(),
            subscribers: SubscriberMap::default(),
            ready: Vec::new(),
            queue_messages_max: config.subscriber_queue_messages_max.max(1),
            queue_bytes_max: config.subscriber_queue_bytes_max.max(1),
            shard_queue_bytes: 0,
            shard_queue_bytes_max: config.pubsub_queue_bytes_max.max(1),
            subscribers_max: config.subscribers_max,
            counters: TopicCounters::default(),
        }
    }

    pub fn counters(&self) -> TopicCounters {
        TopicCounters {
            topics: self.by_topic.len() as u64,
            subscribers: self.subscribers.len() as u64,
            ..self.counters
        }
    }

    pub fn subscribe(&mut self, topic: Bytes) -> Result<SubscriberId, Error> {
        if self.subscribers.len() >= self.subscribers_max {
            return Err(Error::TooManySubscribers {
                limit: self.subscribers_max,
            });
        }
        let id = SubscriberId::new(self.shard, self.next_sequence);
        self.next_sequence += 1;
        self.by_topic.entry(topic.clone()).or_default().push(id);
        self.subscribers.insert(
            id,
            Subscriber {
                topic,
                queue: VecDeque::new(),
                queue_bytes: 0,
                dropped: 0,
                in_ready: false,
            },
        );
        Ok(id)
    }

    pub fn unsubscribe(&mut self, id: SubscriberId) -> bool {
        let Some(subscriber) = self.subscribers.remove(&id) else {
            return false;
        };
        self.shard_queue_bytes -= subscriber.queue_bytes;
        if let Some(list) = self.by_topic.get_mut(&subscriber.topic) {
            list.retain(|other| *other != id);
            if list.is_empty() {
                self.by_topic.remove(&subscriber.topic);
            }
        }
        true
    }

    pub fn publish(&mut self, topic: &[u8], message: Bytes) -> u32 {
        self.counters.published += 1;
        let Some(list) = self.by_topic.get(topic) else {
            return 0;
        };
        let mut receivers = 0;
        for id in list {
            let Some(subscriber) = self.subscribers.get_mut(id) else {
                debug_assert!(false, "topic lists a missing subscriber");
                continue;
            };
            if !subscriber.in_ready {
                subscriber.in_ready = true;
                self.ready.push(*id);
            }
            subscriber.queue_bytes += message.len();
            self.shard_queue_bytes += message.len();
            subscriber.queue.push_back(message.clone());
            while subscriber.queue.len() > self.queue_messages_max
                || ((subscriber.queue_bytes > self.queue_bytes_max
                    || self.shard_queue_bytes > self.shard_queue_bytes_max)
                    && subscriber.queue.len() > 1)
            {
                let Some(oldest) = subscriber.queue.pop_front() else {
                    break;
                };
                subscriber.queue_bytes -= oldest.len();
                self.shard_queue_bytes -= oldest.len();
                subscriber.dropped += 1;
                self.counters.dropped += 1;
            }
            receivers += 1;
        }
        self.counters.delivered += u64::from(receivers);
        receivers
    }

    pub fn fetch(&mut self, id: SubscriberId, max: u32) -> Result<(Vec<Bytes>, u64), Error> {
        let subscriber = self
            .subscribers
            .get_mut(&id)
            .ok_or(Error::UnknownSubscriber(id))?;
        let max = match max {
            0 => limits::FETCH_MESSAGES_MAX,
            n => n.min(limits::FETCH_MESSAGES_MAX),
        } as usize;
        let take = subscriber.queue.len().min(max);
        let messages: Vec<Bytes> = subscriber.queue.drain(..take).collect();
        let taken: usize = messages.iter().map(Bytes::len).sum();
        subscriber.queue_bytes -= taken;
        self.shard_queue_bytes -= taken;
        let dropped = std::mem::take(&mut subscriber.dropped);
        Ok((messages, dropped))
    }

    /// The messages queued for `id`, oldest first, and how many were dropped since messages
    /// were last taken (`None`: no such subscription). Nothing is taken: see
    /// [`take_delivered`](Self::take_delivered).
    pub fn pending(&self, id: SubscriberId) -> Option<(&VecDeque<Bytes>, u64)> {
        self.subscribers
            .get(&id)
            .map(|subscriber| (&subscriber.queue, subscriber.dropped))
    }

    /// Takes the `count` oldest messages of `id` (delivered by whoever read them with
    /// [`pending`](Self::pending)) and clears its dropped count (reported with them).
    pub fn take_delivered(&mut self, id: SubscriberId, count: usize) {
        let Some(subscriber) = self.subscribers.get_mut(&id) else {
            return;
        };
        let count = count.min(subscriber.queue.len());
        let taken: usize = subscriber.queue.drain(..count).map(|m| m.len()).sum();
        subscriber.queue_bytes -= taken;
        self.shard_queue_bytes -= taken;
        subscriber.dropped = 0;
    }

    /// Drops the oldest message of `id` (one its subscriber can never receive), told to the
    /// subscriber like those the queue limits drop; not counted in the shard's `dropped`, which
    /// counts the slow-subscriber policy's drops only (as gRPC's skipped messages are not).
    pub fn discard_oldest(&mut self, id: SubscriberId) {
        let Some(subscriber) = self.subscribers.get_mut(&id) else {
            return;
        };
        if let Some(message) = subscriber.queue.pop_front() {
            subscriber.queue_bytes -= message.len();
            self.shard_queue_bytes -= message.len();
            subscriber.dropped += 1;
        }
    }

    pub fn has_messages(&self, id: SubscriberId) -> Option<bool> {
        self.subscribers
            .get(&id)
            .map(|s| !s.queue.is_empty() || s.dropped > 0)
    }

    /// A subscription that received messages since it was last reported; each live
    /// subscription is listed at most once, removed ones are skipped.
    pub fn poll_ready(&mut self) -> Option<SubscriberId> {
        while let Some(id) = self.ready.pop() {
            if let Some(subscriber) = self.subscribers.get_mut(&id) {
                subscriber.in_ready = false;
                return Some(id);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shard_wide_queue_limit_drops_oldest_and_counts() {
        let config = Config {
            subscriber_queue_bytes_max: 1000,
            pubsub_queue_bytes_max: 100,
            ..Config::default()
        };
        let mut topics = Topics::new(0, &config);
        let a = topics.subscribe(Bytes::from_static(b"t")).unwrap();
        let b = topics.subscribe(Bytes::from_static(b"t")).unwrap();
        for i in 0..10u8 {
            assert_eq!(topics.publish(b"t", Bytes::from(vec![i; 10])), 2);
        }
        // 2 subscribers × 10 messages × 10 bytes = 200 bytes > 100: the oldest went.
        assert!(topics.shard_queue_bytes <= 100);
        let (messages_a, dropped_a) = topics.fetch(a, 0).unwrap();
        let (messages_b, dropped_b) = topics.fetch(b, 0).unwrap();
        assert_eq!(messages_a.len() as u64 + dropped_a, 10);
        assert_eq!(messages_b.len() as u64 + dropped_b, 10);
        assert!(dropped_a + dropped_b >= 10);
        // The newest message always survives.
        assert_eq!(messages_a.last().unwrap()[0], 9);
        assert_eq!(messages_b.last().unwrap()[0], 9);
        assert_eq!(topics.shard_queue_bytes, 0);
        assert_eq!(topics.counters().dropped, dropped_a + dropped_b);
    }

    /// A message larger than a subscriber queue's byte limit (up to --value-bytes-max may be
    /// published) is counted in the queue's bytes like any other, and kept: a queue always
    /// holds its newest message, dropping (and counting) everything older to make room. The
    /// next message then pushes it out the same way.
    #[test]
    fn a_message_over_the_queue_byte_limit_is_kept_alone_and_counted() {
        let config = Config {
            subscriber_queue_bytes_max: 100,
            pubsub_queue_bytes_max: 1000,
            ..Config::default()
        };
        let mut topics = Topics::new(0, &config);
        let id = topics.subscribe(Bytes::from_static(b"t")).unwrap();
        assert_eq!(topics.publish(b"t", Bytes::from(vec![1; 10])), 1);
        assert_eq!(topics.publish(b"t", Bytes::from(vec![2; 500])), 1);
        assert_eq!(
            topics.shard_queue_bytes, 500,
            "the large message is counted"
        );
        let (messages, dropped) = topics.fetch(id, 0).unwrap();
        assert_eq!((messages.len(), messages[0].len(), dropped), (1, 500, 1));
        assert_eq!(topics.shard_queue_bytes, 0);

        assert_eq!(topics.publish(b"t", Bytes::from(vec![3; 500])), 1);
        assert_eq!(topics.publish(b"t", Bytes::from(vec![4; 10])), 1);
        let (messages, dropped) = topics.fetch(id, 0).unwrap();
        assert_eq!((messages.len(), messages[0][0], dropped), (1, 4, 1));
        assert_eq!(topics.counters().dropped, 2);
    }
}
