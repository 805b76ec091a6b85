-- The trace header of an asynchronous event (X-Ray form, naming the span that enqueued it), so
-- its delivery continues the caller's trace across the queue.
ALTER TABLE events ADD COLUMN trace TEXT;
