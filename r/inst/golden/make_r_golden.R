# Writes the R golden fixture of contract/SPEC.md section 6 into
# contract/golden/r/: a glm model folder (model.json with files hashed, model.rds),
# input.csv + input.schema.json (20 rows, one missing numeric value) and
# expected.csv + expected.schema.json (the predictions of that input).
#
# Run from the repository root, with the package installed:
#   R_LIBS=.venv/R-library Rscript r/inst/golden/make_r_golden.R [OUT_DIR]
# Deterministic: same R and package versions give the same bytes.
library(ambidex)

args <- commandArgs(trailingOnly = TRUE)
out <- if (length(args)) args[1] else file.path("contract", "golden", "r")
Sys.setenv(AMBIDEX_CONTRACT_DIR = Sys.getenv("AMBIDEX_CONTRACT_DIR", "contract"))

set.seed(1)
n <- 300
x1 <- round(rnorm(n), 6)
x2 <- sample(0:50, n, replace = TRUE)
plan <- factor(sample(c("basic", "pro", "team"), n, replace = TRUE), levels = c("basic", "pro", "team"))
eta <- -0.5 + 1.2 * x1 - 0.03 * x2 + c(basic = 0.8, pro = 0, team = -0.7)[as.character(plan)]
churn <- factor(ifelse(runif(n) < plogis(eta), "Yes", "No"), levels = c("No", "Yes"))
train <- data.frame(x1 = x1, x2 = x2, plan = plan, churn = churn)

params <- list(target = "churn", method = "glm", validation_fraction = 0.2, golden_n = 5L)
trained <- ambidex:::train_model(train, params, seed = 1L)
unlink(file.path(out, "model"), recursive = TRUE)
ambidex:::write_model_folder(
  trained, file.path(out, "model"), name = "churn-r", golden_n = 5L,
  created = as.POSIXct("2024-01-01 00:00:00", tz = "UTC")
)

set.seed(2)
input <- data.frame(
  x1 = round(rnorm(20), 6),
  x2 = sample(0:50, 20, replace = TRUE),
  plan = factor(sample(levels(plan), 20, replace = TRUE), levels = levels(plan))
)
input$x1[3] <- NA
write_typed_table(input, file.path(out, "input.csv"))
expected <- predict_model(file.path(out, "model"), input)
write_typed_table(expected, file.path(out, "expected.csv"))
stopifnot(all(verify_golden(file.path(out, "model"))$ok))
cat("wrote", normalizePath(out), "\n")
