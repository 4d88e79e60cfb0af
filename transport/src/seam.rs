//! The frontend seam: what every frontend does the same way, written once.
//!
//! A frontend frames bytes (a ring frame, an HTTP/2 stream, a QUIC stream) into
//! [`Request`]s and answers back into bytes. Everything between is here:
//!
//! - **Dispatch** ([`start`]): run a request in place when its core can answer at
//!   once (the usual case: the key is this core's, nothing waits), else as a future that is
//!   polled once at once (so requests start in the order they came) and spawned only if it
//!   must wait (for another core, the log, a long-polling FETCH).
//! - **The subscription lifecycle** ([`Subscriptions`]): every subscriber id the engine hands a
//!   client is recorded on the connection, session or stream that asked for it, and
//!   unsubscribed when that ends, however it ends (a clean close, a disconnect, a crash of the
//!   client, a dropped task).
//! - **Errors**: the client-visible status of an engine error is [`veddb_wire::Status`],
//!   mapped in one place, [`veddb_wire::Error::status`].
//!
//! A new transport implements its framing and calls these; it writes no dispatch, no
//! subscription bookkeeping and no error table of its own.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use veddb_engine::CoreContext;
use veddb_wire::{Request, Response, SubscriberId};

/// A request's answer, or the future that will produce it.
pub enum Started {
    /// Answered in place.
    Answered(Response),
    /// Started (polled once) and waiting: poll it again, or spawn it.
    Waiting(Pin<Box<dyn Future<Output = Response>>>),
}

/// Runs `request` on `context`'s core: in place when the core answers at once (no future, no
/// allocation), else as a boxed future polled once with `cx` (so it starts now, in order).
///
/// The core's coarse clock must be fresh: it is inside a source's poll (the loop refreshed it
/// this round); a frontend woken by I/O calls [`CoreContext::refresh_clock`] first (once for
/// the requests of one read).
pub fn start(context: &CoreContext, request: Request, cx: &mut Context<'_>) -> Started {
    match context.try_execute_local(request) {
        Ok(response) => Started::Answered(response),
        Err(request) => {
            let context = context.clone();
            let mut future: Pin<Box<dyn Future<Output = Response>>> =
                Box::pin(async move { context.execute(request).await });
            match future.as_mut().poll(cx) {
                Poll::Ready(response) => Started::Answered(response),
                Poll::Pending => Started::Waiting(future),
            }
        }
    }
}

/// The subscriptions held through one connection, session or stream. Every subscriber id an
/// answer hands out is [`note`](Self::note)d; an UNSUBSCRIBE the client sends itself is
/// [`forget`](Self::forget)-ten; whatever is left is unsubscribed when this is dropped or
/// [`close`](Self::close)d, so a client that goes away leaves no subscriber behind to fill its
/// bounded buffer forever.
pub struct Subscriptions {
    context: CoreContext,
    held: Vec<SubscriberId>,
}

impl Subscriptions {
    pub fn new(context: &CoreContext) -> Subscriptions {
        Subscriptions {
            context: context.clone(),
            held: Vec::new(),
        }
    }

    /// Records the subscriber an answer hands out (any other answer is ignored).
    pub fn note(&mut self, response: &Response) {
        if let Response::Subscribed { subscriber } = response {
            self.held.push(*subscriber);
        }
    }

    /// Records that `request`, if it is an UNSUBSCRIBE, ends a subscription the client ended
    /// itself (nothing to clean up later). Call when it succeeded or failed alike: either way
    /// the subscriber is gone.
    pub fn forget(&mut self, request: &Request) {
        if let Request::Unsubscribe { subscriber } = request {
            self.held.retain(|held| held != subscriber);
        }
    }

    /// Unsubscribes everything held now, each from a task of its own on this core (the
    /// subscriber's shard may be another core's). Once the engine has stopped there is
    /// nothing left to unsubscribe from.
    pub fn close(&mut self) {
        if self.context.is_stopped() {
            self.held.clear();
            return;
        }
        for subscriber in self.held.drain(..) {
            let context = self.context.clone();
            compio::runtime::spawn(async move {
                let _ = context.execute(Request::Unsubscribe { subscriber }).await;
            })
            .detach();
        }
    }
}

impl Drop for Subscriptions {
    fn drop(&mut self) {
        self.close();
    }
}
