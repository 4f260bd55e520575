-- churn_features: the churn model's input for one signup-cohort window.
-- Bound parameters only: :window_start, :window_end (UTC, half-open).
SELECT
    c.customer_id,
    c.signup_month,
    c.tenure,
    c.monthly_charges,
    c.total_charges,
    c.contract,
    c.internet_service,
    c.payment_method,
    c.paperless_billing,
    c.senior,
    c.churn
FROM churn c
WHERE c.signup_month >= :window_start
  AND c.signup_month < :window_end
ORDER BY c.customer_id
