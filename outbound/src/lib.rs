//! Outbound I/O, out of the request path: webhook delivery (`webhooks`: the durable
//! outbox task, retries, signatures, the delivery log, and the application's webhook
//! for calls without a token), the egress policy every outbound request obeys
//! (`egress`), and the requests between the nodes of a cluster, authenticated both
//! ways (`hops`; `relay`: the connection a device's signaling is relayed over). The conference's device and dialog events become their callbacks'
//! bodies here, with their delivery; the recording callback, which lists files in the
//! REST shape, is shaped in `api` (`recording_callbacks.rs`) and sent through here.

pub mod egress;
pub mod hops;
pub mod relay;
pub mod webhooks;
