-- 0014: a month that no longer receives rows is merged into one part, so that FINAL
-- reads it without merging (docs/performance.md).
--
-- FINAL merges the parts of each partition at read time (each partition on its own:
-- do_not_merge_across_partitions_select_final), which reads every row's order key; a
-- partition that is one merged part needs no such merge. ClickHouse's background merges
-- leave two or three parts in a month; with these settings it merges every part of a
-- partition once all of them are an hour old: every month but the current one, and a
-- month that a replay or a late event wrote into again an hour later. It changes no row
-- that FINAL shows, only when duplicates and replaced versions are dropped from disk.
ALTER TABLE {db}.touchpoints
    MODIFY SETTING min_age_to_force_merge_seconds = 3600,
                   min_age_to_force_merge_on_partition_only = 1;

ALTER TABLE {db}.journeys
    MODIFY SETTING min_age_to_force_merge_seconds = 3600,
                   min_age_to_force_merge_on_partition_only = 1;

ALTER TABLE {db}.attribution
    MODIFY SETTING min_age_to_force_merge_seconds = 3600,
                   min_age_to_force_merge_on_partition_only = 1;

ALTER TABLE {db}.messaging_events
    MODIFY SETTING min_age_to_force_merge_seconds = 3600,
                   min_age_to_force_merge_on_partition_only = 1;
