// SimCluster: the nodes of a simulated cluster (the real core, each node's
// fs::FileSystem with its Cluster, page store and twins) in this process,
// on one SimNetwork, each under a FakeKernel page cache; the simulation's
// workload and its scripted scenarios drive them (STYLE.md, "Simulate the
// cluster"; docs/testing.md).
//
// Thread-safety: every method is thread-safe; a node's Up and Down wait for
// the calls running on it (On) to end.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <string_view>

#include "common/mutex.h"
#include "fs/cluster.h"
#include "fs/cluster.h"
#include "fs/filesystem.h"
#include "tests/sim/fake_kernel.h"
#include "tests/sim/sim_network.h"

namespace cshm::sim {

constexpr uint32_t kNodes = 3;

class SimCluster {
 public:
  SimCluster(uint64_t seed, const std::string& dir) : dir_(dir), net_(seed) {
    for (uint32_t i = 0; i < kNodes; i++) {
      config_.nodes.push_back(net::NodeConfig{i, "sim", static_cast<uint16_t>(7000 + i), ""});
      all_.insert(i);
    }
    config_.metadata_node = 0;
    config_.request_timeout_ms = 300;
    config_.heartbeat_ms = 40;
    config_.lease_ms = 400;
    // The fake kernel keeps no names, but the metadata node still tells every
    // node of each change over the simulated network and waits this long for
    // one it cannot reach.
    config_.name_cache_ms = 50;
    config_.migrate.enabled = false;
    config_.migrate.check_s = 0.1;  // the kept write-backs' and queued unlocks' retries
  }
  ~SimCluster() {
    for (uint32_t i = 0; i < kNodes; i++) Down(i);
  }

  const std::set<uint32_t>& all() const { return all_; }
  SimNetwork& net() { return net_; }
  // The nodes' configuration, which Up() gives the next start of each.
  net::ClusterConfig& config() { return config_; }
  // The readahead window of the nodes' fake kernels (pages; 1: none), from
  // their next start on.
  void SetReadahead(uint64_t pages) { readahead_ = pages; }
  // Called with the node's id once its messenger is on the network, inside
  // its Cluster::Start (which waits for it): requests may arrive meanwhile.
  void SetStartedHook(std::function<void(uint32_t node)> hook) {
    MutexLock l(&hook_mu_);
    started_hook_ = std::move(hook);
  }

  // Called with the node's id, the inode and the range (len 0: to the end)
  // before the daemon tells a node's kernel to drop pages (its notify), on
  // the thread that tells it.
  void SetInvalidateHook(std::function<void(uint32_t node, uint64_t ino, uint64_t off, uint64_t len)> hook) {
    MutexLock l(&hook_mu_);
    invalidate_hook_ = std::move(hook);
  }

  Status Up(uint32_t i) {
    Node& n = nodes_[i];
    WriterLock lock(&n.mu);
    fs::FileSystemOptions o;
    o.state_dir = dir_ + "/node" + std::to_string(i);
    o.node_id = i;
    o.capacity_bytes = 64 << 20;
    o.cluster = config_;
    o.messenger = [this, i, start = net_.Factory()](net::MessengerOptions mo) {
      auto m = start(std::move(mo));
      std::function<void(uint32_t)> hook;
      {
        MutexLock l(&hook_mu_);
        hook = started_hook_;
      }
      if (m.ok() && hook) hook(i);  // the node is on the network; its Cluster::Start has not returned
      return m;
    };
    CSHM_ASSIGN_OR_RETURN(n.fs, fs::FileSystem::Open(o));
    n.kernel = std::make_unique<FakeKernel>(n.fs.get(), &n.log, readahead_);
    FakeKernel* k = n.kernel.get();
    n.fs->SetNotifier([this, i, k](uint64_t ino, uint64_t off, uint64_t len) {
      if (off == fs::kAttributesOnly) return;  // the fake kernel keeps pages only
      std::function<void(uint32_t, uint64_t, uint64_t, uint64_t)> hook;
      {
        MutexLock l(&hook_mu_);
        hook = invalidate_hook_;
      }
      if (hook) hook(i, ino, off, len);
      k->Invalidate(ino, off, len);
    });
    n.fs->SetEntryNotifier([](uint64_t, const std::string&) {});
    MutexLock l(&n.inos_mu);
    n.inos.clear();
    return Status::Ok();
  }

  // A crash, as kill -9 would: the network first (nothing more leaves the
  // node), then what was in its memory, its kernel's cache included.
  void Down(uint32_t i) {
    net_.Crash(i);
    Unmount(i);
  }
  // A clean stop, as an unmount: the node's FileSystem stops with its
  // network up (unless it crashed first: Down), and the network goes with it.
  void Unmount(uint32_t i) {
    Node& n = nodes_[i];
    WriterLock lock(&n.mu);
    n.fs.reset();
    n.kernel.reset();
  }
  bool up(uint32_t i) {
    ReaderLock lock(&nodes_[i].mu);
    return nodes_[i].fs != nullptr;
  }

  // Runs `fn(fs, kernel, ino of name)` on node `i` if it is up.
  template <typename F>
  Status On(uint32_t i, const std::string& name, F fn) {
    Node& n = nodes_[i];
    ReaderLock lock(&n.mu);
    if (!n.fs) return Unavailable("node " + std::to_string(i) + " is down");
    uint64_t ino = 0;
    {
      MutexLock l(&n.inos_mu);
      auto it = n.inos.find(name);
      if (it != n.inos.end()) ino = it->second;
    }
    if (ino == 0) {
      CSHM_ASSIGN_OR_RETURN(auto rec, n.fs->ns().Lookup(1, name, meta::Caller{0, 0, i}));
      CSHM_RETURN_IF_ERROR(n.fs->OpenedForWrite(rec.ino));  // mapped writable from now on
      MutexLock l(&n.inos_mu);
      ino = n.inos[name] = rec.ino;
    }
    return fn(*n.fs, *n.kernel, ino);
  }

  // What every node knows of page `page` of `name` and what each one's
  // kernel did with it: for the message of a failure about that page.
  std::string Explain(const std::string& name, uint64_t page,
                      const std::function<std::string(std::string_view)>& describe) {
    std::string out;
    for (uint32_t i = 0; i < kNodes; i++) {
      Node& n = nodes_[i];
      uint64_t ino = 0;
      {
        MutexLock l(&n.inos_mu);
        auto it = n.inos.find(name);
        if (it != n.inos.end()) ino = it->second;
      }
      {
        ReaderLock lock(&n.mu);
        out += n.fs && n.fs->cluster() && ino != 0 ? n.fs->cluster()->DescribePage(ino, page)
                                                   : "node " + std::to_string(i) + ": down or never opened it";
      }
      out += "\n" + n.log.Of(ino, page, describe);
    }
    return out;
  }

  Status Create(uint32_t creator, const std::string& name, uint64_t size) {
    Node& n = nodes_[creator];
    ReaderLock lock(&n.mu);
    CSHM_ASSIGN_OR_RETURN(auto rec, n.fs->CreateOrOpen(1, name, S_IFREG | 0600, O_CREAT | O_RDWR,
                                                       meta::Caller{0, 0, creator}));
    meta::SetAttrRequest req;
    req.size = size;
    return n.fs->SetAttr(rec.ino, req).status();
  }

 private:
  struct Node {
    SharedMutex mu;  // exclusive: starting or crashing it; shared: a call on it (On)
    std::unique_ptr<fs::FileSystem> fs GUARDED_BY(mu);
    std::unique_ptr<FakeKernel> kernel GUARDED_BY(mu);
    KernelLog log;  // kept across crashes
    Mutex inos_mu;  // after mu
    std::map<std::string, uint64_t> inos GUARDED_BY(inos_mu);
  };
  const std::string dir_;
  SimNetwork net_;
  net::ClusterConfig config_;
  uint64_t readahead_ = 1;
  std::set<uint32_t> all_;
  Mutex hook_mu_;  // a leaf: the hooks run after it is released
  std::function<void(uint32_t)> started_hook_ GUARDED_BY(hook_mu_);
  std::function<void(uint32_t, uint64_t, uint64_t, uint64_t)> invalidate_hook_ GUARDED_BY(hook_mu_);
  Node nodes_[kNodes];
};

}  // namespace cshm::sim
