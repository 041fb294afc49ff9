//! Failover between endpoints: etcd-client does not move off a dead or frozen
//! member by itself, so each endpoint gets its own client and a failed request
//! moves this client to the next one.

use std::{
    future::Future,
    sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use dlock_core::Error;
use etcd_client::{Client, ConnectOptions};

use crate::errors::from_etcd;

pub(crate) struct Endpoints {
    urls: Vec<String>,
    /// For ordinary requests: each bounded by the operation timeout.
    bounded: Clients,
    /// For the calls that block until something happens (an election campaign, an
    /// observer waiting for a leader): the same settings without the per-request
    /// timeout, which tonic applies until the first answer arrives and so would end
    /// every wait longer than it. Made only when first needed.
    waiting: Clients,
    current: AtomicUsize,
}

/// One client per endpoint, made when first needed (a member down at start-up is
/// tried again when failover reaches it).
struct Clients {
    options: ConnectOptions,
    clients: Mutex<Vec<Option<Client>>>,
}

/// Which clients a call goes through.
#[derive(Clone, Copy)]
enum Kind {
    Bounded,
    Waiting,
}

impl Endpoints {
    /// `options` without a request timeout; ordinary requests get `timeout`.
    pub(crate) fn new(
        urls: Vec<String>,
        options: ConnectOptions,
        timeout: std::time::Duration,
    ) -> Self {
        let clients = |options: ConnectOptions| Clients {
            options,
            clients: Mutex::new(vec![None; urls.len()]),
        };
        Endpoints {
            bounded: clients(options.clone().with_timeout(timeout)),
            waiting: clients(options),
            urls,
            current: AtomicUsize::new(0),
        }
    }

    /// The endpoint in use and its client of `kind`, starting from the current
    /// endpoint and moving on past any that cannot be reached.
    async fn client(&self, kind: Kind) -> Result<(usize, Client), Error> {
        let clients = match kind {
            Kind::Bounded => &self.bounded,
            Kind::Waiting => &self.waiting,
        };
        let n = self.urls.len();
        let start = self.current.load(Ordering::Acquire);
        let mut last = None;
        for step in 0..n {
            let at = (start + step) % n;
            let cached = clients.clients.lock().unwrap_or_else(|p| p.into_inner())[at].clone();
            let client = match cached {
                Some(client) => client,
                None => {
                    match Client::connect([&self.urls[at]], Some(clients.options.clone())).await {
                        Ok(client) => {
                            clients.clients.lock().unwrap_or_else(|p| p.into_inner())[at] =
                                Some(client.clone());
                            client
                        }
                        Err(e) => {
                            let error = from_etcd(e);
                            if !error.is_retryable() {
                                return Err(error);
                            }
                            last = Some(error);
                            continue;
                        }
                    }
                }
            };
            if step > 0 {
                self.current.store(at, Ordering::Release);
            }
            return Ok((at, client));
        }
        Err(last.unwrap_or_else(|| Error::unavailable("no etcd endpoint could be reached")))
    }

    /// Runs one request on the current endpoint; if it fails as unreachable or slow,
    /// the next request goes to the next endpoint.
    pub(crate) async fn call<T, F, Fut>(&self, request: F) -> Result<T, Error>
    where
        F: FnOnce(Client) -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        self.call_with(Kind::Bounded, request).await
    }

    /// [`call`](Self::call) for a request that blocks until something happens: no
    /// request timeout (HTTP/2 keep-alive still notices a dead member). The caller
    /// bounds it, or cancels it by dropping the future.
    pub(crate) async fn call_waiting<T, F, Fut>(&self, request: F) -> Result<T, Error>
    where
        F: FnOnce(Client) -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        self.call_with(Kind::Waiting, request).await
    }

    async fn call_with<T, F, Fut>(&self, kind: Kind, request: F) -> Result<T, Error>
    where
        F: FnOnce(Client) -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let (at, client) = self.client(kind).await?;
        let result = request(client).await;
        if let Err(e) = &result
            && e.is_retryable()
        {
            self.failed(at);
        }
        result
    }

    /// [`call`](Self::call) within `limit`: a request still out then is dropped
    /// and counts as a failure of its endpoint, as an error would, so the next
    /// request goes to the next endpoint (a frozen member answers nothing).
    pub(crate) async fn call_within<T, F, Fut>(
        &self,
        operation: &'static str,
        limit: Duration,
        request: F,
    ) -> Result<T, Error>
    where
        F: FnOnce(Client) -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        // A timeout is retryable, so `call_with` moves off the endpoint for it.
        self.call_with(Kind::Bounded, |client| async move {
            tokio::time::timeout(limit, request(client))
                .await
                .unwrap_or(Err(Error::OperationTimeout {
                    operation,
                    after: limit,
                }))
        })
        .await
    }

    /// Moves off endpoint `at`, unless another request already did.
    pub(crate) fn failed(&self, at: usize) {
        let next = (at + 1) % self.urls.len();
        if self
            .current
            .compare_exchange(at, next, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
            && self.urls.len() > 1
        {
            tracing::info!(target: "dlock::backend", from = %self.urls[at], to = %self.urls[next], "etcd endpoint failed; failing over");
        }
    }

    /// The endpoint requests go to now.
    pub(crate) fn current_url(&self) -> &str {
        &self.urls[self.current.load(Ordering::Acquire)]
    }
}
