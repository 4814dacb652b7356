-- 0006: finished workflow runs are pruned after result_expires; index them for that.
CREATE INDEX workflows_finished ON pgtasks.workflows (updated_at)
    WHERE status IN ('SUCCESS', 'FAILURE', 'CANCELLED');
