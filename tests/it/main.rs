//! The one integration test binary: starts the real `distcron` binary on free loopback ports
//! with temp data dirs and drives it over HTTP, as an operator would.

#![allow(unreachable_pub, missing_docs, clippy::unwrap_used)]

mod access;
mod alerts;
mod api;
mod backends_etcd;
mod backends_mongo;
mod catchup;
mod charts;
mod claims;
mod cli;
mod cluster;
mod durability;
mod engine;
mod jitter;
mod labels;
mod legacy;
mod live;
mod metrics;
mod nemesis;
mod openapi;
mod process;
mod retries;
mod security;
mod stores;
mod support;
