#' Write a typed table (CSV plus schema sidecar)
#'
#' Implements contract/SPEC.md section 3 byte for byte: UTF-8 without BOM, a
#' header row, `,` separator, `\n` line ends, RFC 4180 quoting, a missing
#' value as an empty unquoted field and an empty string as `""`; doubles as the
#' decimal that reads back to the same value (15 significant digits when
#' they do, else 17) with `NaN`, `Inf`, `-Inf` as text; booleans `true`/`false`;
#' timestamps `YYYY-MM-DDTHH:MM:SS[.ffffff]Z` in UTC; factors as their labels
#' with the levels in the sidecar `<name>.schema.json`.
#'
#' `data.table::fwrite()` (`quote = FALSE`) writes what it can write as the
#' contract spells it (integers, factors with pre-quoted levels, booleans as
#' `false`/`true` factors, doubles that read back from 15 digits: those are
#' checked by reading the file back); the rest is formatted here first
#' (fwrite alone writes doubles with 15 digits, NaN as missing and the empty
#' string unquoted, which the contract forbids).
#'
#' @param df A data frame.
#' @param path Path of the CSV file; the sidecar is written beside it.
#' @param schema A table schema (list) to write against: columns are taken by
#'   name in the schema's order and coerced losslessly; `NULL` infers it from
#'   `df` (every column nullable).
#' @return The schema written, invisibly.
#' @export
#' @examples
#' path <- tempfile(fileext = ".csv")
#' write_typed_table(data.frame(x = c(0.1, NaN, NA), s = c("", NA, "a,b")), path)
#' cat(readLines(path), sep = "\n")
write_typed_table <- function(df, path, schema = NULL) {
  df <- as.data.frame(df, stringsAsFactors = FALSE, optional = TRUE)
  if (is.null(schema)) {
    schema <- infer_table_schema(df)
  } else {
    df <- conform_to_schema(df, schema, path)
  }
  schema$row_count <- nrow(df)
  schema$contract_version <- schema$contract_version %||% 1L
  schema <- schema_for_json(schema)
  validate_document("table", json_parse(json_text(schema, pretty = FALSE)))
  header <- csv_quote(vapply(schema$columns, function(col) enc2utf8(col$name), character(1)))
  dir.create(dirname(path), recursive = TRUE, showWarnings = FALSE)
  native <- vapply(schema$columns, function(col) {
    col$type == "double" && native_double_ok(df[[col$name]])
  }, logical(1))
  force <- list()
  write_fields(df, schema$columns, native, force, header, path)
  # Read the double columns back with fread, the parser read_typed_table()
  # uses: fread's native writer and a 15-digit text that fread rounds to a
  # neighbour (it is not correctly rounded) are caught here; those cells are
  # written again with 17 digits.
  doubles <- which(vapply(schema$columns, function(col) col$type == "double", logical(1)))
  if (length(doubles) && nrow(df)) {
    same <- doubles_read_back(path, df, schema$columns, doubles)
    redo <- FALSE
    for (k in seq_along(doubles)) {
      j <- doubles[k]
      if (is.null(same[[k]]) || !all(same[[k]])) {
        redo <- TRUE
        native[j] <- FALSE
        force[[j]] <- if (is.null(same[[k]])) rep(TRUE, nrow(df)) else !same[[k]]
      }
    }
    if (redo) write_fields(df, schema$columns, native, force, header, path)
  }
  json_write(schema, table_sidecar_path(path))
  invisible(schema)
}

# Rows are encoded and appended in chunks of about a million fields: a
# million-row table of text fields held at once means tens of millions of
# live strings, and R's string cache and garbage collector slow down
# superlinearly with that.
write_fields <- function(df, cols, native, force, header, path,
                         chunk_fields = getOption("ambidex.table_chunk_fields", 1e6)) {
  con <- file(path, open = "wb")
  writeBin(charToRaw(paste0(paste(header, collapse = ","), "\n")), con)
  close(con)
  n <- nrow(df)
  if (!length(cols) || !n) return(invisible())
  step <- max(1L, as.integer(chunk_fields %/% length(cols)))
  for (from in seq.int(1L, n, by = step)) {
    rows <- from:min(n, from + step - 1L)
    whole <- length(rows) == n
    fields <- lapply(seq_along(cols), function(j) {
      x <- df[[cols[[j]]$name]]
      if (!whole) x <- x[rows]
      if (native[j]) return(as.vector(x))
      if (j <= length(force) && !is.null(force[[j]])) return(fmt_double_csv(x, force[[j]][rows]))
      encode_column_fwrite(x, cols[[j]])
    })
    names(fields) <- paste0("V", seq_along(fields))
    data.table::fwrite(
      data.table::setDT(fields), path, append = TRUE, quote = FALSE, sep = ",",
      eol = "\n", na = "", col.names = FALSE, bom = FALSE, showProgress = FALSE
    )
  }
  invisible()
}

# For each double column, per cell: does fread read back the same double
# (NA, NaN and the sign of zero included)? NULL when the read fails.
doubles_read_back <- function(path, df, cols, doubles) {
  back <- fread_quiet(
    path, sep = ",", quote = "\"", header = TRUE, select = doubles,
    colClasses = list(double = doubles), na.strings = "", strip.white = FALSE,
    fill = FALSE, blank.lines.skip = FALSE, encoding = "UTF-8", data.table = FALSE,
    showProgress = FALSE, check.names = FALSE
  )
  lapply(seq_along(doubles), function(k) {
    y <- if (!is.null(back) && length(back) == length(doubles)) back[[k]]
    x <- as.double(df[[cols[[doubles[k]]]$name]])
    if (!is.double(y) || length(y) != length(x)) return(NULL)
    nx <- is.na(x)
    ny <- is.na(y)
    same <- nx & ny & is.nan(x) == is.nan(y)
    both <- which(!nx & !ny)
    same[both] <- x[both] == y[both] & (x[both] != 0 | (1 / x[both] > 0) == (1 / y[both] > 0))
    same
  })
}

schema_for_json <- function(schema) {
  schema$columns <- lapply(schema$columns, function(col) {
    if (!is.null(col$levels)) col$levels <- I(as.character(unlist(col$levels)))
    col
  })
  if (!length(schema$columns)) schema$columns <- list()
  schema
}

conform_to_schema <- function(df, schema, path) {
  out <- lapply(schema$columns, function(col) {
    if (!col$name %in% names(df)) {
      amb_abort("contract.missing_column",
                paste0("Column '", col$name, "' of the schema is not in the data frame written to ", path, "."),
                "Add the column or drop it from the schema.", column = col$name)
    }
    x <- coerce_column(df[[col$name]], col, where = paste0(" (writing ", path, ")"))
    if (col$type == "category") {
      levels <- as.character(unlist(col$levels))
      bad <- which(!is.na(x) & !(as.character(x) %in% levels))
      if (length(bad)) {
        amb_abort("contract.type_mismatch",
                  paste0("Column '", col$name, "' holds '", as.character(x)[bad[1]],
                         "', not one of the schema's levels."),
                  "Add the level to the schema or recode the value.", column = col$name)
      }
      x <- factor(as.character(x), levels = levels)
    }
    if (isFALSE(col$nullable) && any(is.na(x) & !(is.double(x) & is.nan(x)))) {
      amb_abort("contract.type_mismatch",
                paste0("Column '", col$name, "' is not nullable but has missing values."),
                "Fill them or declare the column nullable.", column = col$name)
    }
    x
  })
  names(out) <- vapply(schema$columns, function(col) col$name, character(1))
  structure(out, class = "data.frame", row.names = .set_row_names(nrow(df)))
}
