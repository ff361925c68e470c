-- pkgtest.*: a method of the install test (tests/system/install.test.mjs) only. The test
-- packages it with the shipped methods, @PKGTEST_VERSION@ replaced by the version of the
-- methods package, so that an upgrade of that package shows in the answer.

return method({
  name = "pkgtest.version",
  summary = "Version of the methods package this method came with",
  description = "Only in the packages that the install test builds.",
  since = "2026-12-01",
  stability = "experimental",
  permission = "public",
  params = T.object({}),
  result = T.string(),
  examples = {
    { name = "the packaged version", params = {}, result = "@PKGTEST_VERSION@" },
  },
  handler = function(ctx, params)
    return "@PKGTEST_VERSION@"
  end,
})
