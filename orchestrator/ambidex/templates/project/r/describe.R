# describe: an R stage of your own. It reads the table the Python stage wrote (typed CSV, so
# factor levels and integers arrive intact) and writes a per-plan summary.
main <- function(ctx) {
  customers <- ambidex::ctx_input_table(ctx, "customers")
  by_plan <- split(customers, customers$plan)
  summary <- data.frame(
    plan = factor(names(by_plan), levels = levels(customers$plan)),
    customers = vapply(by_plan, nrow, integer(1)),
    churn_rate = vapply(by_plan, function(d) mean(d$churned == "yes"), numeric(1))
  )
  ambidex::ctx_write_table(ctx, "summary", summary)
  ambidex::ctx_log_metric(ctx, "churn_rate", mean(customers$churned == "yes"))
}
