# contract/golden: the R fixture must verify in R; the Python fixture's
# manifest must validate with the R validator and its input must read here.

golden_dir <- function(lang) file.path(repo_contract_dir(), "golden", lang)

test_that("the R golden model verifies and reproduces expected.csv", {
  skip_without_repo()
  dir <- golden_dir("r")
  expect_invisible(validate_document("model", file.path(dir, "model", "model.json")))
  expect_true(all(verify_golden(file.path(dir, "model"))$ok))
  input <- read_typed_table(file.path(dir, "input.csv"))
  expect_identical(sum(is.na(input)), 1L)
  expected <- read_typed_table(file.path(dir, "expected.csv"))
  got <- predict_model(file.path(dir, "model"), input)
  expect_identical(got$prediction, expected$prediction)
  expect_equal(got$score, expected$score, tolerance = 1e-9)
})

test_that("the R golden fixture is reproducible byte for byte", {
  skip_without_repo()
  out <- local_tmp_dir()
  script <- system.file("golden", "make_r_golden.R", package = "ambidex")
  libs <- paste(.libPaths(), collapse = .Platform$path.sep)
  status <- withr::with_envvar(
    c(AMBIDEX_CONTRACT_DIR = repo_contract_dir(), R_LIBS = libs),
    system2(file.path(R.home("bin"), "Rscript"), c("--vanilla", shQuote(script), shQuote(out)),
            stdout = FALSE, stderr = FALSE)
  )
  expect_identical(status, 0L)
  files <- list.files(golden_dir("r"), recursive = TRUE)
  expect_setequal(list.files(out, recursive = TRUE), files)
  expect_identical(unname(tools::md5sum(file.path(out, files))),
                   unname(tools::md5sum(file.path(golden_dir("r"), files))),
                   info = "Regenerate: Rscript r/inst/golden/make_r_golden.R")
})

test_that("the Python golden manifest validates in R and its input reads", {
  skip_without_repo()
  dir <- golden_dir("python")
  manifest <- validate_document("model", file.path(dir, "model", "model.json"))
  expect_identical(manifest$runtime$language, "python")
  expect_error(load_model_payload(file.path(dir, "model")), class = "ambidex_artifact_format_not_allowed")
  input <- read_typed_table(file.path(dir, "input.csv"))
  inputs <- vapply(manifest$signature$inputs, `[[`, "", "name")
  expect_true(all(inputs %in% names(input)))
  expected <- read_typed_table(file.path(dir, "expected.csv"))
  expect_identical(nrow(expected), nrow(input))
})
