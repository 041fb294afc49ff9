//! Failover between endpoints: etcd-client does not move off a dead or frozen
//! member by itself, so each endpoint gets its own client and a failed request
//! moves this client to the next one.

use std::{
    future::Future,
    sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use dlock_core::Error;
use etcd_client::{Client, ConnectOptions};

use crate::errors::from_etcd;

pub(crate) struct Endpoints {
    urls: Vec<String>,
    options: ConnectOptions,
    /// One client per endpoint, made when first needed (a member down at start-up
    /// is tried again when failover reaches it).
    clients: Mutex<Vec<Option<Client>>>,
    current: AtomicUsize,
}

impl Endpoints {
    pub(crate) fn new(urls: Vec<String>, options: ConnectOptions) -> Self {
        let clients = Mutex::new(vec![None; urls.len()]);
        Endpoints {
            urls,
            options,
            clients,
            current: AtomicUsize::new(0),
        }
    }

    /// The endpoint in use and its client, starting from the current endpoint and
    /// moving on past any that cannot be reached.
    pub(crate) async fn client(&self) -> Result<(usize, Client), Error> {
        let n = self.urls.len();
        let start = self.current.load(Ordering::Acquire);
        let mut last = None;
        for step in 0..n {
            let at = (start + step) % n;
            let cached = self.clients.lock().unwrap_or_else(|p| p.into_inner())[at].clone();
            let client = match cached {
                Some(client) => client,
                None => match Client::connect([&self.urls[at]], Some(self.options.clone())).await {
                    Ok(client) => {
                        self.clients.lock().unwrap_or_else(|p| p.into_inner())[at] =
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
                },
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
        let (at, client) = self.client().await?;
        let result = request(client).await;
        if let Err(e) = &result
            && e.is_retryable()
        {
            self.failed(at);
        }
        result
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
            tracing::info!(from = %self.urls[at], to = %self.urls[next], "etcd endpoint failed; failing over");
        }
    }

    /// The endpoint requests go to now.
    pub(crate) fn current_url(&self) -> &str {
        &self.urls[self.current.load(Ordering::Acquire)]
    }
}
