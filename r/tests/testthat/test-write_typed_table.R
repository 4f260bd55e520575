test_that("the CSV bytes follow SPEC section 3", {
  path <- file.path(local_tmp_dir(), "t.csv")
  df <- data.frame(
    i = c(1L, NA, -3L),
    d = c(0.1 + 0.2, NaN, NA),
    s = c("", NA, "a,\"b\"\nc"),
    b = c(TRUE, NA, FALSE),
    t = as.POSIXct(c(0, 1.25, NA), origin = "1970-01-01", tz = "UTC"),
    f = factor(c("x", NA, "y, z"), levels = c("y, z", "x")),
    stringsAsFactors = FALSE
  )
  write_typed_table(df, path)
  bytes <- rawToChar(readBin(path, "raw", 1000))
  expect_identical(bytes, paste0(
    "i,d,s,b,t,f\n",
    "1,0.30000000000000004,\"\",true,1970-01-01T00:00:00Z,x\n",
    ",NaN,,,1970-01-01T00:00:01.250000Z,\n",
    "-3,,\"a,\"\"b\"\"\nc\",false,,\"y, z\"\n"
  ))
  side <- jsonlite::fromJSON(sub("csv$", "schema.json", path), simplifyVector = FALSE)
  expect_identical(side$row_count, 3L)
  expect_identical(unlist(side$columns[[6]]$levels), c("y, z", "x"))
  expect_identical(vapply(side$columns, `[[`, "", "type"),
                   c("integer", "double", "string", "boolean", "timestamp", "category"))
})

test_that("a timestamp in another time zone is written in UTC", {
  path <- file.path(local_tmp_dir(), "t.csv")
  x <- as.POSIXct("2024-03-31 03:30:00", tz = "Europe/Paris")
  write_typed_table(data.frame(t = x), path)
  expect_identical(readLines(path)[2], "2024-03-31T01:30:00Z")
})

test_that("a single-column table writes a missing value as an empty line", {
  path <- file.path(local_tmp_dir(), "one.csv")
  write_typed_table(data.frame(s = c("a", NA, ""), stringsAsFactors = FALSE), path)
  expect_identical(rawToChar(readBin(path, "raw", 100)), "s\na\n\n\"\"\n")
  expect_identical(read_typed_table(path)$s, c("a", NA, ""))
})

test_that("columns without a contract type are refused by name", {
  path <- file.path(local_tmp_dir(), "d.csv")
  cnd <- expect_error(write_typed_table(data.frame(day = Sys.Date()), path), class = "ambidex_contract_type_mismatch")
  expect_identical(cnd$column, "day")
})

test_that("writing against a schema orders, coerces losslessly and refuses the rest", {
  path <- file.path(local_tmp_dir(), "s.csv")
  schema <- list(contract_version = 1L, row_count = 0L, columns = list(
    list(name = "a", type = "double", nullable = FALSE),
    list(name = "c", type = "category", nullable = TRUE, levels = I(c("u", "v")))
  ))
  write_typed_table(data.frame(c = c("v", NA), a = 1:2, stringsAsFactors = FALSE), path, schema)
  expect_identical(readLines(path), c("a,c", "1,v", "2,"))
  expect_error(write_typed_table(data.frame(c = "w", a = 1), path, schema), class = "ambidex_contract_type_mismatch")
  expect_error(write_typed_table(data.frame(c = "v", a = NA_real_), path, schema), class = "ambidex_contract_type_mismatch")
  expect_error(write_typed_table(data.frame(a = 1), path, schema), class = "ambidex_contract_missing_column")
})

test_that("zero-row tables keep their header and types", {
  path <- file.path(local_tmp_dir(), "z.csv")
  df <- data.frame(i = integer(), f = factor(character(), levels = "a"))
  write_typed_table(df, path)
  expect_identical(readLines(path), "i,f")
  back <- read_typed_table(path)
  expect_identical(nrow(back), 0L)
  expect_identical(levels(back$f), "a")
})

test_that("full-precision doubles round-trip bit for bit across write chunks", {
  withr::local_options(ambidex.table_chunk_fields = 50)
  path <- file.path(local_tmp_dir(), "p.csv")
  set.seed(3)
  x <- c(rnorm(300) * 10^runif(300, -300, 300), 0.1, 1 / 3, -0, 5e-324, -2.2250738585072014e-308,
         .Machine$double.xmax, NaN, NA, Inf, -Inf, 1e15 + 0.5, 100, 1e-5)
  df <- data.frame(a = x, b = rev(x), i = seq_along(x))
  write_typed_table(df, path)
  back <- read_typed_table(path)
  expect_identical(back$a, x)
  expect_identical(back$b, rev(x))
  expect_identical(1 / back$a[x == 0 & !is.na(x)], -Inf)
  lines <- readLines(path)
  expect_identical(length(lines), length(x) + 1L)
  expect_identical(sub(",.*", "", lines[which(x == 0.1) + 1L]), "0.1")
  expect_identical(sub(",.*", "", lines[which(is.nan(x)) + 1L]), "NaN")
})

test_that("doubles fwrite can write exactly are written by it and read back", {
  path <- file.path(local_tmp_dir(), "n.csv")
  df <- data.frame(a = c(0.25, -1.5, NA, 1e300, 123456.789012), b = c(1e-5, 2, 3, Inf, -Inf))
  write_typed_table(df, path)
  expect_identical(readLines(path), c("a,b", "0.25,1e-05", "-1.5,2", ",3", "1e+300,Inf", "123456.789012,-Inf"))
  expect_identical(read_typed_table(path), df)
})

test_that("categories and booleans keep their text through fwrite's factor writer", {
  path <- file.path(local_tmp_dir(), "f.csv")
  df <- data.frame(f = factor(c("a \"q\"", NA, "b,c", ""), levels = c("", "b,c", "a \"q\"")),
                   b = c(TRUE, FALSE, NA, TRUE))
  write_typed_table(df, path)
  expect_identical(rawToChar(readBin(path, "raw", 200)),
                   "f,b\n\"a \"\"q\"\"\",true\n,false\n\"b,c\",\n\"\",true\n")
  expect_identical(read_typed_table(path), df)
})
