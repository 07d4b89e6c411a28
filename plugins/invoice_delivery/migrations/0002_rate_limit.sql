-- Shared send budget per gateway, so every worker together stays under the gateway's rate limit.
-- next_free is the earliest time the next message may go out (generic cell rate algorithm).
CREATE TABLE delivery.rate_limit (
    gateway     text PRIMARY KEY,
    next_free   timestamptz NOT NULL
);
