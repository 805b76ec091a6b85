-- Every log line paid for a second index; lookups by request id scan one function's lines
-- (bounded by retention) through logs_function_id instead.
DROP INDEX logs_request;
