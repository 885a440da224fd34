-- 0006: touchpoint flags (Touchpoint schema v2).
--
-- is_bot: a known bot or crawler, recognised from the user agent with the
-- crawler-user-agents list; its rows are stored but make no journey, no credit and no
-- learned path. consent: the visitor's consent per category as the source sent it
-- (Segment's context.consent.categoryPreferences), empty when it said nothing.
-- Rows written before this migration read is_bot = 0 and an empty consent.

ALTER TABLE {db}.touchpoints ADD COLUMN IF NOT EXISTS is_bot Bool DEFAULT false AFTER properties;
ALTER TABLE {db}.touchpoints ADD COLUMN IF NOT EXISTS consent Map(String, Bool) AFTER is_bot;
