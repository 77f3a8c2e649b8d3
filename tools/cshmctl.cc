// cshmctl: a thin CLI over the control xattrs of a cshm mount (docs/migrator.md).
//   cshmctl where FILE          the node that owns FILE's pages
//   cshmctl migrate FILE NODE   move its ownership to NODE now
//   cshmctl pin FILE | unpin FILE
//   cshmctl stats FILE          owner, pin, size, decaying access rates per node
//   cshmctl status DIR          every segment under DIR with its owner and rates
// Works from any node: the request goes to wherever the segment lives.
#include <sys/xattr.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>

namespace {

int Fail(const std::string& what) {
  fprintf(stderr, "cshmctl: %s: %s\n", what.c_str(), strerror(errno));
  return 1;
}

bool Get(const std::string& path, const char* name, std::string* out) {
  char buf[4096];
  ssize_t n = getxattr(path.c_str(), name, buf, sizeof(buf));
  if (n < 0) return false;
  out->assign(buf, static_cast<size_t>(n));
  return true;
}

int Set(const std::string& path, const char* name, const std::string& value) {
  if (setxattr(path.c_str(), name, value.data(), value.size(), 0) != 0) {
    if (errno == ENOTSUP || errno == ENODATA) fprintf(stderr, "cshmctl: %s is not on a cshm mount\n", path.c_str());
    return Fail(std::string("setting ") + name + " on " + path);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"cshmctl: where cshm segments live, and moving them"};
  app.require_subcommand(1);
  std::string file, dir;
  unsigned node = 0;
  auto* where = app.add_subcommand("where", "print the node that owns FILE");
  where->add_option("FILE", file)->required();
  auto* migrate = app.add_subcommand("migrate", "move FILE's ownership to NODE now");
  migrate->add_option("FILE", file)->required();
  migrate->add_option("NODE", node)->required();
  auto* pin = app.add_subcommand("pin", "pin FILE against automatic migration");
  pin->add_option("FILE", file)->required();
  auto* unpin = app.add_subcommand("unpin", "let FILE migrate automatically again");
  unpin->add_option("FILE", file)->required();
  auto* stats = app.add_subcommand("stats", "owner, pin, size and access rates of FILE");
  stats->add_option("FILE", file)->required();
  auto* status = app.add_subcommand("status", "every segment under DIR");
  status->add_option("DIR", dir)->required();
  CLI11_PARSE(app, argc, argv);

  std::string v;
  if (*where) {
    if (!Get(file, "user.cshm.owner", &v)) return Fail("reading the owner of " + file);
    printf("%s\n", v.c_str());
  } else if (*migrate) {
    if (int rc = Set(file, "user.cshm.owner", std::to_string(node))) return rc;
    printf("%s now lives on node %u\n", file.c_str(), node);
  } else if (*pin || *unpin) {
    return Set(file, "user.cshm.pin", *pin ? "1" : "0");
  } else if (*stats) {
    if (!Get(file, "user.cshm.stats", &v)) return Fail("reading the stats of " + file);
    printf("%s\n", v.c_str());
  } else if (*status) {
    std::error_code ec;
    int n = 0;
    for (auto it = std::filesystem::recursive_directory_iterator(dir, ec);
         !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
      if (!it->is_regular_file(ec)) continue;
      const std::string path = it->path().string();
      if (Get(path, "user.cshm.stats", &v)) {
        printf("%s: %s\n", path.c_str(), v.c_str());
        n++;
      }
    }
    if (ec) {
      errno = ec.value();
      return Fail("walking " + dir);
    }
    printf("%d segment%s\n", n, n == 1 ? "" : "s");
  }
  return 0;
}
