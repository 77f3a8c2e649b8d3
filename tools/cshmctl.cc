// cshmctl: a thin CLI over the control xattrs of a cshm mount (docs/migrator.md,
// docs/operations.md).
//   cshmctl where FILE          the node that owns FILE's pages
//   cshmctl migrate FILE NODE   move its ownership to NODE now
//   cshmctl pin FILE | unpin FILE
//   cshmctl stats FILE          owner, pin, size, decaying access rates per node
//   cshmctl status [PATH]       every node of the cluster PATH is in: up or not,
//                               what it holds, what is wrong (exit 2 if anything is)
//   cshmctl segments DIR        every segment under DIR with its owner and rates
// Works from any node: the request goes to wherever the segment lives.
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace {

int Fail(const std::string& what) {
  fprintf(stderr, "cshmctl: %s: %s\n", what.c_str(), strerror(errno));
  return 1;
}

bool Get(const std::string& path, const char* name, std::string* out) {
  std::vector<char> buf(64 << 10);  // the largest xattr value Linux passes
  ssize_t n = getxattr(path.c_str(), name, buf.data(), buf.size());
  if (n < 0) return false;
  out->assign(buf.data(), static_cast<size_t>(n));
  return true;
}

std::string Bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) {
    b /= 1024;
    u++;
  }
  char out[32];
  snprintf(out, sizeof out, u == 0 ? "%.0f %s" : "%.1f %s", b, units[u]);
  return out;
}

std::string Seconds(double ms) {
  char out[32];
  if (ms < 1000) snprintf(out, sizeof out, "%.0f ms", ms);
  else if (ms < 120000) snprintf(out, sizeof out, "%.1f s", ms / 1000);
  else if (ms < 7200000) snprintf(out, sizeof out, "%.0f min", ms / 60000);
  else snprintf(out, sizeof out, "%.1f h", ms / 3600000);
  return out;
}

// The cluster's health as `path`'s node sees it: a table, then what is wrong
// in plain words. Returns 0 if nothing is, 2 if anything is, 1 if it cannot tell.
int Status(const std::string& path, bool json) {
  std::string text;
  if (!Get(path, "user.cshm.cluster", &text)) {
    if (errno == ENOTSUP || errno == ENODATA) {
      fprintf(stderr, "cshmctl: %s is not on a cshm mount\n", path.c_str());
      return 1;
    }
    return Fail("asking the cluster's state through " + path);
  }
  nlohmann::json st = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (st.is_discarded() || !st.contains("nodes") || !st["nodes"].is_array()) {
    fprintf(stderr, "cshmctl: the daemon's answer is not the cluster state this cshmctl knows (a different version?)\n");
    return 1;
  }
  std::vector<std::string> wrong;
  for (const auto& n : st["nodes"]) {
    const std::string id = "node " + std::to_string(n.value("id", -1));
    if (!n.value("reachable", false)) {
      std::string why = id + " (" + n.value("address", "?") + ") does not answer: " + n.value("error", "?");
      if (n.contains("last_heard_ms")) why += "; last heard " + Seconds(n["last_heard_ms"].get<double>()) + " ago";
      else why += "; never heard since this node started";
      wrong.push_back(why + ". Its segments cannot be read or written from here until it is back.");
      continue;
    }
    if (!n.value("self", false) && !n.value("lease_held", false))
      wrong.push_back(id + " answers but this node's lease with it has run out: this node trusts none of its pages "
                      "and holds none of its locks until a heartbeat is echoed again.");
    if (n.value("kept_writebacks", 0) > 0)
      wrong.push_back(id + " keeps " + std::to_string(n["kept_writebacks"].get<uint64_t>()) +
                      " write-back(s) an owner did not take; they are delivered when that owner answers.");
    if (n.value("queued_unlocks", 0) > 0)
      wrong.push_back(id + " has " + std::to_string(n["queued_unlocks"].get<uint64_t>()) +
                      " unlock(s) an owner did not answer, sent again until it does.");
    const double used = n.value("page_bytes", 0.0), cap = n.value("capacity_bytes", 0.0);
    if (cap > 0 && used >= 0.9 * cap)
      wrong.push_back(id + "'s pages use " + Bytes(used) + " of its " + Bytes(cap) +
                      " cap: writes that need more space there get ENOSPC (raise -o size=, or move segments away).");
  }
  if (json) {
    st["problems"] = wrong;
    printf("%s\n", st.dump(2).c_str());
    return wrong.empty() ? 0 : 2;
  }
  printf("%-5s %-22s %-5s %-10s %-9s %-8s %-21s %-7s %s\n", "NODE", "ADDRESS", "UP", "HEARD", "UPTIME",
         "SEGMENTS", "PAGES / CAP", "KEPT", "INCARNATION");
  for (const auto& n : st["nodes"]) {
    const bool self = n.value("self", false), up = n.value("reachable", false);
    std::string heard = self ? "self" : n.contains("last_heard_ms") ? Seconds(n["last_heard_ms"].get<double>()) + " ago" : "never";
    std::string pages = up ? Bytes(n.value("page_bytes", 0.0)) + " / " + Bytes(n.value("capacity_bytes", 0.0)) : "-";
    printf("%-5d %-22s %-5s %-10s %-9s %-8s %-21s %-7s %s%s\n", n.value("id", -1), n.value("address", "-").c_str(),
           up ? "up" : "DOWN", heard.c_str(), up ? Seconds(n.value("uptime_ms", 0.0)).c_str() : "-",
           up && n.value("segments", -1) >= 0 ? std::to_string(n["segments"].get<int64_t>()).c_str() : "-",
           pages.c_str(), up ? std::to_string(n.value("kept_writebacks", 0)).c_str() : "-",
           n.value("incarnation", "-").c_str(), n.value("id", -1) == st.value("metadata_node", -2) ? "  (metadata)" : "");
  }
  if (wrong.empty()) {
    printf("healthy: every node answers\n");
    return 0;
  }
  for (const std::string& w : wrong) printf("PROBLEM: %s\n", w.c_str());
  return 2;
}

int Set(const std::string& path, const char* name, const std::string& value) {
  if (setxattr(path.c_str(), name, value.data(), value.size(), 0) != 0) {
    if (errno == ENOTSUP || errno == ENODATA) fprintf(stderr, "cshmctl: %s is not on a cshm mount\n", path.c_str());
    return Fail(std::string("setting ") + name + " on " + path);
  }
  return 0;
}

// Moves `file` to `node`; with `progress`, a line on stderr that the node
// moving it updates a few times a second (pages gone through, of all).
int Migrate(const std::string& file, unsigned node, bool progress) {
  struct stat st;
  if (stat(file.c_str(), &st) != 0) return Fail("finding " + file);
  std::mutex mu;
  std::condition_variable cv;
  bool finished = false, shown = false;
  std::thread watcher;
  if (progress) {
    // Asked through the file's directory: the kernel holds the file's own
    // inode lock while the move (a setxattr) runs.
    const std::string dir = std::filesystem::path(file).parent_path().string();
    watcher = std::thread([&, dir] {
      std::unique_lock<std::mutex> lock(mu);
      while (!cv.wait_for(lock, std::chrono::milliseconds(200), [&] { return finished; })) {
        lock.unlock();
        std::string text;
        if (Get(dir.empty() ? "." : dir, "user.cshm.cluster", &text)) {
          auto js = nlohmann::json::parse(text, nullptr, false);
          if (!js.is_discarded() && js.contains("nodes") && js["nodes"].is_array())
            for (const auto& n : js["nodes"]) {
              if (!n.contains("moving") || n["moving"].value("ino", 0ull) != static_cast<uint64_t>(st.st_ino)) continue;
              const double done = n["moving"].value("done_pages", 0.0), total = n["moving"].value("total_pages", 0.0);
              fprintf(stderr, "\rmoving %s from node %d to node %d: %s of %s (%.0f %%)   ", file.c_str(),
                      n.value("id", -1), n["moving"].value("target", -1), Bytes(done * 4096).c_str(),
                      Bytes(total * 4096).c_str(), total > 0 ? 100 * done / total : 100.0);
              shown = true;
            }
        }
        lock.lock();
      }
    });
  }
  const int rc = Set(file, "user.cshm.owner", std::to_string(node));
  if (watcher.joinable()) {
    {
      std::lock_guard<std::mutex> lock(mu);
      finished = true;
    }
    cv.notify_all();
    watcher.join();
    if (shown) fprintf(stderr, "\n");
  }
  if (rc == 0) printf("%s now lives on node %u\n", file.c_str(), node);
  return rc;
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
  bool progress = isatty(2) != 0;
  migrate->add_flag("--progress,!--no-progress", progress,
                    "show how far the move is on stderr (default: when stderr is a terminal)");
  auto* pin = app.add_subcommand("pin", "pin FILE against automatic migration");
  pin->add_option("FILE", file)->required();
  auto* unpin = app.add_subcommand("unpin", "let FILE migrate automatically again");
  unpin->add_option("FILE", file)->required();
  auto* stats = app.add_subcommand("stats", "owner, pin, size and access rates of FILE");
  stats->add_option("FILE", file)->required();
  std::string at = ".";
  bool json = false;
  auto* status = app.add_subcommand("status", "every node of the cluster: up or not, what it holds, what is wrong "
                                              "(exit 2 if anything is)");
  status->add_option("PATH", at, "any path on the cshm mount (default: the current directory)");
  status->add_flag("--json", json, "the same as JSON, for machines");
  auto* segments = app.add_subcommand("segments", "every segment under DIR with its owner and access rates");
  segments->add_option("DIR", dir)->required();
  CLI11_PARSE(app, argc, argv);

  std::string v;
  if (*where) {
    if (!Get(file, "user.cshm.owner", &v)) return Fail("reading the owner of " + file);
    printf("%s\n", v.c_str());
  } else if (*migrate) {
    return Migrate(file, node, progress);
  } else if (*pin || *unpin) {
    return Set(file, "user.cshm.pin", *pin ? "1" : "0");
  } else if (*stats) {
    if (!Get(file, "user.cshm.stats", &v)) return Fail("reading the stats of " + file);
    printf("%s\n", v.c_str());
  } else if (*status) {
    return Status(at, json);
  } else if (*segments) {
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
