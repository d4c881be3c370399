-- Why the router chose an attempt's deployment (first choice, fallback, which deployments it
-- skipped and why: circuit_open, rate_limited, over_limit) and how long its first token took.
ALTER TABLE attempts ADD COLUMN chosen_because TEXT;
ALTER TABLE attempts ADD COLUMN first_token_ms INTEGER;
