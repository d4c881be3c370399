-- What cost reports need beyond the amount charged, stored at the time of the charge so a
-- report never depends on today's configuration:
--  * price_known = 0 for a deployment configured with price = "unknown" (amount 0, flagged in
--    every report as unpriced, never silently free);
--  * realtime_amount_pico_usd: what the same usage costs at the deployment's real-time price
--    (equal to amount_pico_usd on the realtime tier; "batch saved" is the difference);
--  * route, and for a job answered by a deployment other than its route's primary, that
--    primary and what it would have charged for the same usage on the same tier (NULL when
--    the primary's price is unknown); "fallback extra" is amount minus that.
ALTER TABLE costs ADD COLUMN price_known INTEGER NOT NULL DEFAULT 1;
ALTER TABLE costs ADD COLUMN realtime_amount_pico_usd INTEGER NOT NULL DEFAULT 0;
ALTER TABLE costs ADD COLUMN route TEXT;
ALTER TABLE costs ADD COLUMN primary_deployment TEXT;
ALTER TABLE costs ADD COLUMN primary_amount_pico_usd INTEGER;
-- Every row before this migration was charged on the realtime tier.
UPDATE costs SET realtime_amount_pico_usd = amount_pico_usd;
CREATE INDEX costs_created ON costs (created_at);
