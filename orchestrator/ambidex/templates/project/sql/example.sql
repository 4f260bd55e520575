-- A feature-mart transform: values only through bound parameters (:window_start, :window_end).
SELECT customer_id, tenure, monthly_charges, plan, churned
FROM customers
WHERE signup_at >= :window_start AND signup_at < :window_end
