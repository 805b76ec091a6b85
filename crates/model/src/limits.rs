//! Lambda's documented limits, enforced by Rampart (see `shared/spec/invoke-api.md`).

/// Largest synchronous invoke request payload (observed hard limit on AWS).
pub const MAX_SYNC_PAYLOAD_BYTES: usize = 6_291_456;
/// Largest asynchronous (`Event`) invoke payload (1 MB since October 2025).
pub const MAX_ASYNC_PAYLOAD_BYTES: usize = 1_048_576;
/// Largest response or error body a runtime may post (6 MiB + 100, as the Runtime API enforces).
pub const MAX_RESPONSE_BYTES: usize = 6_291_556;
/// Largest zipped deployment package accepted through the API.
pub const MAX_ZIP_BYTES: u64 = 50 * 1024 * 1024;
/// Largest total unzipped size of a deployment package.
pub const MAX_UNZIPPED_BYTES: u64 = 250 * 1024 * 1024;
/// Most entries a deployment package may hold (a zip bomb of tiny files is refused early).
pub const MAX_ZIP_ENTRIES: usize = 20_000;
/// Largest control-plane request body: a 50 MB zip grows by a third when base64-encoded in JSON.
pub const MAX_CONTROL_BODY_BYTES: usize = 70 * 1024 * 1024;
/// Total size of a function's environment variables (keys and values).
pub const MAX_ENVIRONMENT_BYTES: usize = 4096;
/// Longest `X-Amz-Client-Context` header (base64).
pub const MAX_CLIENT_CONTEXT_BYTES: usize = 3583;
/// Default and bounds of a function's timeout, in seconds.
pub const DEFAULT_TIMEOUT_SECS: u32 = 3;
/// Longest timeout a function may set, in seconds.
pub const MAX_TIMEOUT_SECS: u32 = 900;
/// Default memory, in MB.
pub const DEFAULT_MEMORY_MB: u32 = 128;
/// Smallest memory setting, in MB.
pub const MIN_MEMORY_MB: u32 = 128;
/// Largest memory setting, in MB.
pub const MAX_MEMORY_MB: u32 = 10_240;
/// How long an idle instance is kept before it is reclaimed, by default, in seconds.
pub const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 600;
/// Default cap on concurrent instances of one function when none is reserved.
pub const DEFAULT_MAX_CONCURRENCY: u32 = 100;
/// Longest idle timeout, in seconds (a week: longer keeps idle processes for no benefit).
pub const MAX_IDLE_TIMEOUT_SECS: u64 = 7 * 24 * 3600;
/// Most instances one function may reserve (Lambda's default account concurrency).
pub const MAX_RESERVED_CONCURRENCY: u32 = 1000;
