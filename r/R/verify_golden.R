#' Run a model folder's golden cases
#'
#' Scores each positive golden input and compares with its expected
#' prediction and score within `golden.tolerance`; runs each negative input and
#' checks it fails with the recorded error code. Used as a smoke test after
#' loading a model, and by the conformance tests.
#'
#' @param folder A model folder (R runtime).
#' @return A data.frame with one row per case: `kind` ("positive"/"negative"),
#'   `ok` and `detail`.
#' @export
#' @examples
#' \dontrun{
#' all(verify_golden("contract/golden/r/model")$ok)
#' }
verify_golden <- function(folder) {
  model <- load_model_payload(folder)
  golden <- attr(model, "manifest")$golden
  tol <- golden$tolerance %||% 1e-9
  pos <- lapply(golden$positive, function(case) {
    got <- predict_model(model, golden_input_frame(case$input))
    want <- case$expected
    pred <- got$prediction[1]
    same_pred <- if (is.null(want$prediction)) is.na(pred) else if (is.numeric(want$prediction)) {
      isTRUE(abs(as.double(pred) - want$prediction) <= tol)
    } else identical(as.character(pred), want$prediction)
    same_score <- if (is.null(want$score)) is.na(got$score[1]) else isTRUE(abs(got$score[1] - want$score) <= tol)
    data.frame(kind = "positive", ok = same_pred && same_score,
               detail = paste0("prediction ", format(pred), ", score ", fmt_double(got$score[1])))
  })
  neg <- lapply(golden$negative, function(case) {
    code <- tryCatch({
      predict_model(model, golden_input_frame(case$input))
      "(no error)"
    }, ambidex_error = function(e) e$code)
    data.frame(kind = "negative", ok = identical(code, case$error),
               detail = paste0("expected ", case$error, ", got ", code))
  })
  do.call(rbind, c(pos, neg))
}
