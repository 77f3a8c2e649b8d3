// The preload shim with programs that know nothing of cshm: our C checker,
// Python's sysv_ipc and stress-ng, on a 2-node cluster.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sched.h>
#include <sys/shm.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <sys/stat.h>
#include <string>
#include <thread>
#include <vector>

#include "ipc_compat/sysv_segments.h"
#include "ipc_compat/sysv_semaphores.h"
#include "tests/support/test_cluster.h"

namespace cshm::testing {
namespace {

using namespace std::chrono_literals;

std::vector<std::string> Env(const std::string& mount) {
  return {"LD_PRELOAD=" SHIM, "CSHM_MOUNT=" + mount};
}

CommandResult Check(const std::string& mount, std::vector<std::string> args) {
  args.insert(args.begin(), SHM_CHECK);
  return RunCommand(args, 60s, Env(mount));
}

// A checker that runs until it gets a line on stdin ("hold ID").
class Holder {
 public:
  Holder(const std::string& mount, int id, const char* mode = "hold")
      : Holder(mount, {SHM_CHECK, mode, std::to_string(id)}) {}
  Holder(const std::string& mount, const std::vector<std::string>& argv) {
    int in[2], out[2];
    if (pipe2(in, O_CLOEXEC) != 0 || pipe2(out, O_CLOEXEC) != 0) return;
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    pid_ = fork();
    if (pid_ == 0) {
      dup2(in[0], 0);
      dup2(out[1], 1);
      for (const std::string& e : Env(mount)) putenv(strdup(e.c_str()));
      execv(args[0], args.data());
      _exit(127);
    }
    close(in[0]);
    close(out[1]);
    in_ = in[1];
    out_ = out[0];
  }
  pid_t pid() const { return pid_; }
  ~Holder() {
    if (in_ >= 0) close(in_);
    if (out_ >= 0) close(out_);
    if (pid_ > 0 && !WaitForExit(pid_, 10s)) {
      kill(pid_, SIGKILL);
      WaitForExit(pid_, 10s);
    }
  }
  // The next line of its output, within the deadline.
  std::string Line() {
    std::string line;
    auto deadline = std::chrono::steady_clock::now() + 30s;
    char c;
    while (std::chrono::steady_clock::now() < deadline) {
      pollfd p{out_, POLLIN, 0};
      if (poll(&p, 1, 100) <= 0) continue;
      if (read(out_, &c, 1) != 1) break;
      if (c == '\n') return line;
      line += c;
    }
    return line + "<no line>";
  }
  void Release() { (void)!write(in_, "go\n", 3); }

 private:
  pid_t pid_ = -1;
  int in_ = -1, out_ = -1;
};

class IpcShimTest : public ::testing::Test {
 protected:
  void SetUp() override {
    chmod(c_.dir().path().c_str(), 0755);
    ASSERT_EQ(c_.Start(), "");
  }
  std::string M(int i) { return c_.node(i).mountpoint(); }
  TestCluster c_{2};
};

TEST_F(IpcShimTest, single_node_rules_errno_by_errno) {
  CommandResult r = Check(M(0), {"local", "0x4242"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "ok\n");
}

TEST_F(IpcShimTest, two_nodes_share_by_key_and_by_shmid_and_rmid_waits_for_the_last_detach) {
  CommandResult made = Check(M(0), {"create", "0x777", "20000"});
  ASSERT_EQ(made.exit_code, 0) << made.err;
  const int id = std::stoi(made.out);
  CommandResult seen = Check(M(1), {"verify", "0x777", "20000"});
  ASSERT_EQ(seen.exit_code, 0) << seen.err;
  EXPECT_EQ(seen.out, "nattch 1\n");  // the verifier itself
  {
    Holder holder(M(1), id);  // node 1 attaches by the shmid node 0 printed
    EXPECT_EQ(holder.Line(), "nattch 1");
    EXPECT_EQ(Check(M(0), {"stat", std::to_string(id)}).out, "nattch 1 mode 666 key 1911\n");
    ASSERT_EQ(Check(M(0), {"rmid", std::to_string(id)}).exit_code, 0);
    // The key is free at once on every node; the memory is still attached.
    CommandResult again = Check(M(0), {"create", "0x777", "100"});
    ASSERT_EQ(again.exit_code, 0) << again.err;
    EXPECT_NE(std::stoi(again.out), id);
    EXPECT_EQ(Check(M(0), {"stat", std::to_string(id)}).out, "nattch 1 mode 1666 key 0\n");
    holder.Release();
    EXPECT_EQ(holder.Line(), "detached");
  }
  EXPECT_EQ(Check(M(0), {"stat", std::to_string(id)}).out, "errno 22\n");
  EXPECT_EQ(Check(M(1), {"stat", std::to_string(id)}).out, "errno 22\n");
  // A removed segment whose last user exits without shmdt goes too.
  CommandResult p = Check(M(0), {"create", "0x778", "100"});
  ASSERT_EQ(p.exit_code, 0);
  const std::string id2 = p.out.substr(0, p.out.size() - 1);
  ASSERT_EQ(Check(M(1), {"rmid", id2}).exit_code, 0);
  EXPECT_EQ(Check(M(0), {"stat", id2}).out, "errno 22\n");  // nobody attached: gone at once
  CommandResult q = Check(M(0), {"create", "0x779", "100"});
  const std::string id3 = q.out.substr(0, q.out.size() - 1);
  {
    Holder h(M(1), std::stoi(id3), "hold-exit");
    EXPECT_EQ(h.Line(), "nattch 1");
    ASSERT_EQ(Check(M(0), {"rmid", id3}).exit_code, 0);
    EXPECT_EQ(Check(M(0), {"stat", id3}).out, "nattch 1 mode 1666 key 0\n");
    h.Release();
    EXPECT_EQ(h.Line(), "exiting attached");
  }
  EXPECT_EQ(Check(M(1), {"stat", id3}).out, "errno 22\n");
}

TEST_F(IpcShimTest, ftok_agrees_across_nodes_and_posix_shm_works) {
  std::ofstream(M(0) + "/keyfile") << "k";
  CommandResult a = Check(M(0), {"ftok", M(0) + "/keyfile"});
  CommandResult b = Check(M(1), {"ftok", M(1) + "/keyfile"});
  ASSERT_EQ(a.exit_code, 0) << a.err;
  ASSERT_EQ(b.exit_code, 0) << b.err;
  EXPECT_EQ(a.out, b.out);
  CommandResult p = Check(M(1), {"posix", "/cshm-test-posix"});
  EXPECT_EQ(p.exit_code, 0) << p.err;
}

TEST_F(IpcShimTest, python_sysv_ipc_shares_a_segment_between_nodes) {
  const std::string py = "/usr/bin/python3";
  if (!std::filesystem::exists("/usr/lib/python3/dist-packages/sysv_ipc.cpython-311-x86_64-linux-gnu.so") &&
      RunCommand({py, "-c", "import sysv_ipc"}, 10s).exit_code != 0)
    GTEST_SKIP() << "python3-sysv-ipc is not installed (scripts/install-deps.sh installs it)";
  CommandResult w = RunCommand({py, "-c",
                                "import sysv_ipc\n"
                                "m = sysv_ipc.SharedMemory(0x5150, sysv_ipc.IPC_CREX, size=4096)\n"
                                "m.write(b'from python on node 0')\n"
                                "m.detach()\n"},
                               30s, Env(M(0)));
  ASSERT_EQ(w.exit_code, 0) << w.err;
  CommandResult r = RunCommand({py, "-c",
                                "import sysv_ipc\n"
                                "m = sysv_ipc.SharedMemory(0x5150)\n"
                                "print(m.read(21).decode())\n"
                                "m.remove()\n"},
                               30s, Env(M(1)));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "from python on node 0\n");
}

TEST_F(IpcShimTest, stress_ng_shm_sysv_passes_its_own_verification) {
  if (RunCommand({"stress-ng", "--version"}, 10s).exit_code != 0) GTEST_SKIP() << "stress-ng is not installed";
  CommandResult r = RunCommand({"stress-ng", "--shm-sysv", "1", "--shm-sysv-ops", "20", "--verify", "--timeout", "60s",
                                "--metrics-brief"},
                               120s, Env(M(0)));
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(r.err.find("fail"), std::string::npos) << r.err;
  // It really used the cluster: segments were made under .sysv.
  EXPECT_TRUE(std::filesystem::exists(M(1) + "/.sysv"));
}

// On node 1, which holds no metadata: the set's names are node 0's, its values node 1's.
TEST_F(IpcShimTest, stress_ng_sem_sysv_passes_its_own_verification) {
  if (RunCommand({"stress-ng", "--version"}, 10s).exit_code != 0) GTEST_SKIP() << "stress-ng is not installed";
  CommandResult r = RunCommand({"stress-ng", "--sem-sysv", "2", "--sem-sysv-ops", "2000", "--verify", "--timeout",
                                "60s", "--metrics-brief"},
                               120s, Env(M(1)));
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(r.err.find("fail"), std::string::npos) << r.err;
  // Its sets were node 1's, not the kernel's: node 1 answered its calls.
  char status[8192] = {};
  ASSERT_GT(getxattr(M(1).c_str(), "user.cshm.cluster", status, sizeof(status) - 1), 0);
  const std::string s(status);
  const size_t node1 = s.find("\"id\": 1");
  ASSERT_NE(node1, std::string::npos) << s;
  const size_t ops = s.find("\"semaphore_ops\": ", node1);
  ASSERT_NE(ops, std::string::npos) << s;
  EXPECT_GE(std::stoull(s.substr(ops + 17)), 4000u) << s;
}

TEST_F(IpcShimTest, kernel_and_cluster_segments_do_not_mix) {
  const std::string py = "/usr/bin/python3";
  // A key of this process only: kernel keys are machine-wide.
  const std::string key = std::to_string(0x61000000 + getpid() % 0xffffff);
  if (RunCommand({py, "-c", "import sysv_ipc"}, 10s).exit_code != 0) GTEST_SKIP() << "python3-sysv-ipc missing";
  // Without the shim: the kernel's segment.
  ASSERT_EQ(RunCommand({py, "-c",
                        "import sysv_ipc\n"
                        "m = sysv_ipc.SharedMemory(" + key + ", sysv_ipc.IPC_CREAT, size=4096)\n"
                        "m.write(b'kernel')\n"},
                       30s)
                .exit_code,
            0);
  // With it: the cluster's, a different segment.
  CommandResult r = RunCommand({py, "-c",
                                "import sysv_ipc\n"
                                "m = sysv_ipc.SharedMemory(" + key + ", sysv_ipc.IPC_CREAT, size=4096)\n"
                                "print(m.read(6))\n"
                                "m.remove()\n"},
                               30s, Env(M(0)));
  EXPECT_EQ(r.out, "b'\\x00\\x00\\x00\\x00\\x00\\x00'\n") << r.err;
  CommandResult k = RunCommand({py, "-c",
                                "import sysv_ipc\n"
                                "m = sysv_ipc.SharedMemory(" + key + ")\n"
                                "print(m.read(6))\n"
                                "m.remove()\n"},
                               30s);
  EXPECT_EQ(k.out, "b'kernel'\n") << k.err;
}

// Only who may attach may register an attachment. Seen before: att-<shmid>
// was 1777, so any user could add entries there, inflate shm_nattch and keep
// an IPC_RMID'd segment alive.
TEST_F(IpcShimTest, only_users_who_may_attach_can_register_attachments) {
  ipc::SysvSegments segments(M(0));
  const key_t key = 0x74000000 + getpid() % 0xffffff;
  const int id = segments.Get(key, 4096, IPC_CREAT | 0600);
  ASSERT_GE(id, 0) << strerror(errno);
  const std::string att = M(0) + "/.sysv/att-" + std::to_string(id);
  struct stat st;
  ASSERT_EQ(stat(att.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 01700u);
  pid_t child = fork();
  if (child == 0) {
    if (setgid(65534) != 0 || setuid(65534) != 0) _exit(2);
    int fd = open((att + "/intruder").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0666);
    _exit(fd < 0 && errno == EACCES ? 0 : 1);
  }
  int status = 0;
  ASSERT_TRUE(WaitForExit(child, 30s, &status));
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "another user registered an attachment";
  // A mode that lets others read lets them register; IPC_SET changes it.
  struct shmid_ds ds;
  ASSERT_EQ(segments.Control(id, IPC_STAT, &ds), 0);
  ds.shm_perm.mode = 0644;
  ASSERT_EQ(segments.Control(id, IPC_SET, &ds), 0);
  ASSERT_EQ(stat(att.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 01777u);
  ASSERT_EQ(segments.Control(id, IPC_RMID, nullptr), 0);
  EXPECT_FALSE(std::filesystem::exists(att)) << "the attachment directory outlived its segment";
}

// A segment removed while its processes detach leaves nothing behind: its
// id file and its att-<shmid> directory go with the last of them, whoever
// that is (issue 15, item 13: the directory was once left when the
// destroyer had found a detacher's entry still there; this interleaving
// does not make that window, it checks what the fix must keep).
TEST_F(IpcShimTest, a_segment_removed_while_its_processes_detach_leaves_nothing_behind) {
  ipc::SysvSegments segments(M(0));
  constexpr int kRounds = 30, kChildren = 4;
  for (int round = 0; round < kRounds; round++) {
    const int id = segments.Get(IPC_PRIVATE, 4096, IPC_CREAT | 0600);
    ASSERT_GE(id, 0) << strerror(errno);
    int attached[2], go[2];
    ASSERT_EQ(pipe2(attached, O_CLOEXEC), 0);
    ASSERT_EQ(pipe2(go, O_CLOEXEC), 0);
    std::vector<pid_t> kids;
    for (int k = 0; k < kChildren; k++) {
      pid_t pid = fork();
      if (pid == 0) {
        close(go[1]);
        ipc::SysvSegments mine(M(0));
        void* p = mine.Attach(id, nullptr, 0);
        if (p == reinterpret_cast<void*>(-1)) _exit(2);
        (void)!write(attached[1], "a", 1);
        char c;
        (void)!read(go[0], &c, 1);  // returns when the parent closes its end
        _exit(mine.Detach(p) == 0 ? 0 : 3);
      }
      ASSERT_GT(pid, 0);
      kids.push_back(pid);
    }
    close(attached[1]);
    close(go[0]);
    for (int k = 0; k < kChildren; k++) {
      pollfd p{attached[0], POLLIN, 0};
      ASSERT_EQ(poll(&p, 1, 30000), 1) << "round " << round << ": a child did not attach";
      char c;
      ASSERT_EQ(read(attached[0], &c, 1), 1);
    }
    close(go[1]);  // every child detaches now, while we remove the segment
    EXPECT_EQ(segments.Control(id, IPC_RMID, nullptr), 0) << strerror(errno);
    for (pid_t pid : kids) {
      int status = 0;
      ASSERT_TRUE(WaitForExit(pid, 30s, &status));
      EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "round " << round << ": status " << status;
    }
    close(attached[0]);
    const std::string sysv = M(0) + "/.sysv/";
    ASSERT_FALSE(std::filesystem::exists(sysv + "id-" + std::to_string(id))) << "round " << round;
    ASSERT_FALSE(std::filesystem::exists(sysv + "att-" + std::to_string(id)))
        << "round " << round << ": the attachment directory outlived its segment";
  }
}

// The race that left an empty att-<shmid> directory for good, replayed step
// by step: a process attaching locks its entry under a hidden name; before it
// shows it, the last detacher's destroy finds no attachment (hidden entries
// are not counted), removes the segment and cannot remove the directory,
// which still holds the entry. The attacher's detach, finding the segment
// gone, is the last one there and removes the directory (issue 15, item 13).
TEST_F(IpcShimTest, an_attach_that_races_the_last_detach_leaves_nothing_behind_when_it_detaches) {
  ipc::SysvSegments destroyer(M(0));
  const int id = destroyer.Get(IPC_PRIVATE, 4096, IPC_CREAT | 0600);
  ASSERT_GE(id, 0) << strerror(errno);
  const std::string sysv = M(0) + "/.sysv/";
  int rmid = -1;
  bool destroyed_meanwhile = false;
  ipc::SysvSegments::Hooks hooks;
  hooks.entry_hidden = [&] {
    rmid = destroyer.Control(id, IPC_RMID, nullptr);
    destroyed_meanwhile = !std::filesystem::exists(sysv + "id-" + std::to_string(id));
  };
  ipc::SysvSegments attacher(M(0), hooks);
  void* p = attacher.Attach(id, nullptr, 0);
  ASSERT_NE(p, reinterpret_cast<void*>(-1)) << strerror(errno);
  EXPECT_EQ(rmid, 0);
  ASSERT_TRUE(destroyed_meanwhile) << "the interleaving did not happen: the destroy saw the hidden entry";
  EXPECT_TRUE(std::filesystem::exists(sysv + "att-" + std::to_string(id))) << "the entry keeps the directory";
  ASSERT_EQ(attacher.Detach(p), 0) << strerror(errno);
  EXPECT_FALSE(std::filesystem::exists(sysv + "att-" + std::to_string(id)))
      << "the attachment directory outlived its segment";
}

// The owner removes and locks its segment whatever the segment's mode, as on
// Linux. Seen before (LTP shmctl02, shmget04): with mode 0, 0200 or 0400 the
// shim could not write its bookkeeping xattrs, IPC_RMID returned 0 and did
// nothing (the key stayed taken, the files stayed for ever); and SHM_LOCK
// returned 0 but IPC_STAT never showed SHM_LOCKED (LTP shmctl07).
TEST_F(IpcShimTest, the_owner_removes_and_locks_its_segment_whatever_its_mode) {
  const std::string mount = M(0);
  const key_t base = 0x75000000 + getpid() % 0xfff0;
  CommandResult r = RunInChild([&]() -> int {  // an ordinary user, as LTP runs it
    if (setgid(65534) != 0 || setuid(65534) != 0) return 2;
    ipc::SysvSegments segments(mount);
    int step = 10;
    for (int mode : {0, 0200, 0400}) {
      const key_t key = base + mode;
      const int id = segments.Get(key, 4096, IPC_CREAT | IPC_EXCL | mode);
      if (id < 0) return step + 1;
      if (segments.Control(id, IPC_RMID, nullptr) != 0) return step + 2;
      struct stat st;
      const std::string file = mount + "/.sysv/id-" + std::to_string(id);
      if (stat(file.c_str(), &st) == 0) return step + 3;  // nobody attached: gone at once
      const int again = segments.Get(key, 4096, IPC_CREAT | IPC_EXCL | 0600);
      if (again < 0) return step + 4;  // the key is free
      if (segments.Control(again, IPC_RMID, nullptr) != 0) return step + 5;
      step += 10;
    }
    const int id = segments.Get(IPC_PRIVATE, 4096, IPC_CREAT | 0600);
    struct shmid_ds ds;
    if (id < 0 || segments.Control(id, SHM_LOCK, nullptr) != 0 || segments.Control(id, IPC_STAT, &ds) != 0)
      return 41;
    if (!(ds.shm_perm.mode & SHM_LOCKED) || (ds.shm_perm.mode & 0777) != 0600) return 42;
    if (segments.Control(id, SHM_UNLOCK, nullptr) != 0 || segments.Control(id, IPC_STAT, &ds) != 0) return 43;
    if (ds.shm_perm.mode & SHM_LOCKED) return 44;
    return segments.Control(id, IPC_RMID, nullptr) == 0 ? 0 : 45;
  }, 30s);
  EXPECT_EQ(r.exit_code, 0) << "step: 1x mode 0, 2x 0200, 3x 0400 (x: 1 create, 2 IPC_RMID, 3 file left, "
                                       "4 key still taken, 5 second IPC_RMID); 41-45 SHM_LOCK";
}

// The kernel's limits apply to the cluster's segments, read from this node's
// /proc/sys/kernel (set here in an IPC namespace of the child's own, so the
// machine's stay as they are). Seen before (LTP shmget02, shmget03): a size
// past shmmax and a segment past shmmni were created, SHM_HUGETLB accepted.
TEST_F(IpcShimTest, the_kernels_limits_apply_to_new_segments) {
  const std::string mount = M(0);
  CommandResult r = RunInChild([&]() -> int {
    if (unshare(CLONE_NEWIPC) != 0) return 2;
    std::ofstream("/proc/sys/kernel/shmmax") << 65536;
    std::ofstream("/proc/sys/kernel/shmmni") << 3;
    ipc::SysvSegments segments(mount);
    if (segments.Get(IPC_PRIVATE, 65537, IPC_CREAT | 0600) != -1 || errno != EINVAL) return 10;
    int ids[3];
    for (int& id : ids)
      if ((id = segments.Get(IPC_PRIVATE, 65536, IPC_CREAT | 0600)) < 0) return 11;
    const bool full = segments.Get(IPC_PRIVATE, 4096, IPC_CREAT | 0600) == -1 && errno == ENOSPC;
    for (int id : ids) segments.Control(id, IPC_RMID, nullptr);
    if (!full) return 12;
    const int again = segments.Get(IPC_PRIVATE, 4096, IPC_CREAT | 0600);  // room again
    if (again < 0) return 13;
    segments.Control(again, IPC_RMID, nullptr);
    if (access("/proc/sys/vm/nr_hugepages", R_OK) == 0) {
      std::ifstream hp("/proc/sys/vm/nr_hugepages");
      long n = -1;
      hp >> n;
      if (n == 0 && (segments.Get(IPC_PRIVATE, 4096, IPC_CREAT | SHM_HUGETLB | 0600) != -1 || errno != ENOMEM))
        return 14;
    }
    if (setgid(65534) != 0 || setuid(65534) != 0) return 3;
    if (segments.Get(IPC_PRIVATE, 4096, IPC_CREAT | SHM_HUGETLB | 0600) != -1 || errno != EPERM) return 15;
    return 0;
  }, 30s);
  EXPECT_EQ(r.exit_code, 0) << "10 shmmax, 11 create, 12 shmmni, 13 after freeing, 14 SHM_HUGETLB as root "
                                       "without huge pages, 15 SHM_HUGETLB unprivileged";
}

// semmsl, semopm and semmni from this node's /proc (its own IPC namespace).
TEST_F(IpcShimTest, the_kernels_limits_apply_to_semaphores) {
  const std::string mount = M(1);
  CommandResult r = RunInChild([&]() -> int {
    if (unshare(CLONE_NEWIPC) != 0) return 2;
    std::ofstream("/proc/sys/kernel/sem") << "10 32000 4 2";  // semmsl semmns semopm semmni
    ipc::SysvSemaphores sems(mount);
    if (sems.Get(IPC_PRIVATE, 11, IPC_CREAT | 0600) != -1 || errno != EINVAL) return 10;
    // Each set has a marker directory in .sysv, so its link count bounds
    // the sets without a listing; a marker whose set is gone goes at the
    // next count.
    auto links = [&] {
      struct stat st;
      return stat((mount + "/.sysv").c_str(), &st) == 0 ? st.st_nlink : 0;
    };
    mkdir((mount + "/.sysv").c_str(), 01777);  // as the first set would make it
    const nlink_t before = links();
    int ids[2];
    for (int& id : ids)
      if ((id = sems.Get(IPC_PRIVATE, 10, IPC_CREAT | 0600)) < 0) return 11;
    if (links() != before + 2) return 15;
    const std::string stale = mount + "/.sysv/semn-999999";
    if (mkdir(stale.c_str(), 0555) != 0) return 16;
    const bool full = sems.Get(IPC_PRIVATE, 1, IPC_CREAT | 0600) == -1 && errno == ENOSPC;
    struct stat gone;
    if (stat(stale.c_str(), &gone) == 0) return 17;
    struct sembuf ops[5] = {{0, 1, 0}, {1, 1, 0}, {2, 1, 0}, {3, 1, 0}, {4, 1, 0}};
    const bool too_many = sems.Op(ids[0], ops, 5, nullptr) == -1 && errno == E2BIG;
    const bool four = sems.Op(ids[0], ops, 4, nullptr) == 0;
    for (int id : ids) sems.Control(id, 0, IPC_RMID, ipc::SemArg{});
    if (links() != before) return 18;
    if (!full) return 12;
    if (!too_many) return 13;
    if (!four) return 14;
    return 0;
  }, 30s);
  // semmns: the semaphores of all sets, when it is below semmni x semmsl.
  CommandResult mns = RunInChild([&]() -> int {
    if (unshare(CLONE_NEWIPC) != 0) return 2;
    std::ofstream("/proc/sys/kernel/sem") << "10 15 4 8";
    ipc::SysvSemaphores sems(mount);
    int ids[2];
    if ((ids[0] = sems.Get(IPC_PRIVATE, 10, IPC_CREAT | 0600)) < 0) return 20;
    if ((ids[1] = sems.Get(IPC_PRIVATE, 5, IPC_CREAT | 0600)) < 0) return 21;
    const bool full = sems.Get(IPC_PRIVATE, 1, IPC_CREAT | 0600) == -1 && errno == ENOSPC;
    sems.Control(ids[1], 0, IPC_RMID, ipc::SemArg{});
    const int again = sems.Get(IPC_PRIVATE, 5, IPC_CREAT | 0600);
    sems.Control(ids[0], 0, IPC_RMID, ipc::SemArg{});
    if (again >= 0) sems.Control(again, 0, IPC_RMID, ipc::SemArg{});
    if (!full) return 22;
    if (again < 0) return 23;
    return 0;
  }, 30s);
  EXPECT_EQ(mns.exit_code, 0) << "20/21 creates within semmns, 22 past it, 23 room again after IPC_RMID";
  EXPECT_EQ(r.exit_code, 0) << "10 semmsl, 11 create, 12 semmni, 13 semopm, 14 an operation within it, 15 no "
                                "marker per set, 16 stale marker not made, 17 stale marker kept, 18 a removed "
                                "set's marker kept";
}

TEST_F(IpcShimTest, keys_out_of_scope_and_a_missing_mount_fall_through) {
  // CSHM_KEYS: this key is outside, so it is the kernel's (nothing under
  // .sysv). Kernel keys are machine-wide: make them this process's.
  const std::string k1 = std::to_string(0x70000000 + getpid() % 0xffffff);
  const std::string k2 = std::to_string(0x71000000 + getpid() % 0xffffff);
  CommandResult r = RunCommand({SHM_CHECK, "create", k1, "100"}, 30s,
                               {"LD_PRELOAD=" SHIM, "CSHM_MOUNT=" + M(0), "CSHM_KEYS=0x1000-0x1fff"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const int id = std::stoi(r.out);
  EXPECT_FALSE(id & (1 << 30)) << "a kernel shmid";
  EXPECT_EQ(RunCommand({SHM_CHECK, "rmid", r.out.substr(0, r.out.size() - 1)}, 30s).exit_code, 0);
  // A mount that is not there: one warning, then the kernel's shm.
  CommandResult w = RunCommand({SHM_CHECK, "create", k2, "100"}, 30s,
                               {"LD_PRELOAD=" SHIM, "CSHM_MOUNT=/nonexistent/cshm"});
  ASSERT_EQ(w.exit_code, 0) << w.err;
  EXPECT_NE(w.err.find("not a mounted directory"), std::string::npos) << w.err;
  EXPECT_EQ(RunCommand({SHM_CHECK, "rmid", w.out.substr(0, w.out.size() - 1)}, 30s).exit_code, 0);
  // A directory that is not a cshm mount (seen before: accepted, and the
  // segment became a file of that directory, shared with no other node).
  TempDir plain;
  const std::string k3 = std::to_string(0x72000000 + getpid() % 0xffffff);
  CommandResult d = RunCommand({SHM_CHECK, "create", k3, "100"}, 30s,
                               {"LD_PRELOAD=" SHIM, "CSHM_MOUNT=" + plain.path()});
  ASSERT_EQ(d.exit_code, 0) << d.err;
  EXPECT_NE(d.err.find("not in a mounted cshm"), std::string::npos) << d.err;
  EXPECT_FALSE(std::stoi(d.out) & (1 << 30)) << "a cluster shmid from a plain directory";
  EXPECT_FALSE(std::filesystem::exists(plain.path() + "/.sysv")) << "the shim wrote into a plain directory";
  EXPECT_EQ(RunCommand({SHM_CHECK, "rmid", d.out.substr(0, d.out.size() - 1)}, 30s).exit_code, 0);
  // A directory inside a cshm mount is in it.
  ASSERT_EQ(mkdir((M(0) + "/apps").c_str(), 0755), 0);
  const std::string k4 = std::to_string(0x73000000 + getpid() % 0xffffff);
  CommandResult in = RunCommand({SHM_CHECK, "create", k4, "100"}, 30s,
                                {"LD_PRELOAD=" SHIM, "CSHM_MOUNT=" + M(0) + "/apps"});
  ASSERT_EQ(in.exit_code, 0) << in.err;
  EXPECT_TRUE(std::stoi(in.out) & (1 << 30)) << "a kernel shmid inside a cshm mount: " << in.err;
  EXPECT_EQ(RunCommand({SHM_CHECK, "rmid", in.out.substr(0, in.out.size() - 1)}, 30s,
                       {"LD_PRELOAD=" SHIM, "CSHM_MOUNT=" + M(0) + "/apps"})
                .exit_code,
            0);
}

// ---- SysV semaphores (docs/ipc_compat.md, "Semaphores")

CommandResult Sem(const std::string& mount, std::vector<std::string> args) {
  args.insert(args.begin(), SEM_CHECK);
  return RunCommand(args, 120s, Env(mount));
}

// Node 1 holds no metadata: its sets' names live on node 0, their values here.
TEST_F(IpcShimTest, semaphores_single_node_rules_errno_by_errno) {
  CommandResult r = Sem(M(1), {"local", "0x5151"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "ok\n");
}

// The textbook program: a ring buffer in SysV shm guarded by two semaphores,
// producer on one node and consumer on the other, no msync anywhere. Each
// semaphore operation is a release, so every record the consumer is let in
// to read is the one the producer stored (fails when the shim's release is
// taken out: the consumer reads the record that was cached on its node).
TEST_F(IpcShimTest, producer_and_consumer_on_two_nodes_pass_10000_records_without_msync) {
  ASSERT_EQ(Sem(M(0), {"ring", "0x6001", "16"}).exit_code, 0);
  CommandResult consumed;
  std::thread consumer([&] { consumed = Sem(M(1), {"consume", "0x6001", "10000"}); });
  CommandResult produced = Sem(M(0), {"produce", "0x6001", "10000"});
  consumer.join();
  EXPECT_EQ(produced.exit_code, 0) << produced.err;
  EXPECT_EQ(consumed.exit_code, 0) << consumed.err;
  EXPECT_EQ(consumed.out, "ok 10000\n");
  // Every slot was given back: empty = 16, full = 0, seen from both nodes.
  EXPECT_EQ(Sem(M(1), {"get", "0x6001", "0"}).out, "16\n");
  EXPECT_EQ(Sem(M(0), {"get", "0x6001", "1"}).out, "0\n");
}

TEST_F(IpcShimTest, sem_undo_gives_back_what_a_process_killed_on_another_node_held) {
  ASSERT_EQ(Sem(M(0), {"make", "0x6101", "1", "1"}).exit_code, 0);
  Holder taker(M(1), {SEM_CHECK, "take", "0x6101"});
  ASSERT_EQ(taker.Line(), "held");
  EXPECT_EQ(Sem(M(0), {"get", "0x6101", "0"}).out, "0\n");
  ASSERT_EQ(kill(taker.pid(), SIGKILL), 0);
  std::string v;
  for (auto deadline = std::chrono::steady_clock::now() + 30s; std::chrono::steady_clock::now() < deadline;) {
    v = Sem(M(0), {"get", "0x6101", "0"}).out;
    if (v == "1\n") break;
    std::this_thread::sleep_for(50ms);
  }
  EXPECT_EQ(v, "1\n") << "the killed holder's SEM_UNDO was not applied";
}

// A holder's node dies: its daemon cannot tell anyone the process is gone,
// so the owner gives back what it held once that node's lease has run out.
TEST_F(IpcShimTest, sem_undo_gives_back_what_a_process_on_a_dead_node_held) {
  ASSERT_EQ(Sem(M(0), {"make", "0x6102", "1", "1"}).exit_code, 0);
  Holder taker(M(1), {SEM_CHECK, "take", "0x6102"});
  ASSERT_EQ(taker.Line(), "held");
  EXPECT_EQ(Sem(M(0), {"get", "0x6102", "0"}).out, "0\n");
  c_.node(1).Kill9();
  std::string v;
  for (auto deadline = std::chrono::steady_clock::now() + 30s; std::chrono::steady_clock::now() < deadline;) {
    v = Sem(M(0), {"get", "0x6102", "0"}).out;
    if (v == "1\n") break;
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_EQ(v, "1\n") << "the dead node's SEM_UNDO was not applied";
}

// A waiter on node 1, its set owned by node 0: woken by a post there, a
// signal takes its wait back (the post after it is not consumed by it), and
// removal fails it with EIDRM.
TEST_F(IpcShimTest, a_waiter_on_another_node_is_woken_interrupted_and_told_of_removal) {
  ASSERT_EQ(Sem(M(0), {"make", "0x6201", "1", "0"}).exit_code, 0);
  {
    Holder w(M(1), {SEM_CHECK, "wait", "0x6201"});
    ASSERT_EQ(w.Line(), "waiting");
    ASSERT_EQ(Sem(M(0), {"post", "0x6201", "0"}).exit_code, 0);
    EXPECT_EQ(w.Line(), "errno 0");
  }
  {
    Holder w(M(1), {SEM_CHECK, "wait", "0x6201"});
    ASSERT_EQ(w.Line(), "waiting");
    std::this_thread::sleep_for(200ms);  // into the semop; a signal before it is only later
    ASSERT_EQ(kill(w.pid(), SIGUSR1), 0);
    EXPECT_EQ(w.Line(), "errno 4");
  }
  ASSERT_EQ(Sem(M(0), {"post", "0x6201", "0"}).exit_code, 0);
  EXPECT_EQ(Sem(M(1), {"get", "0x6201", "0"}).out, "1\n") << "the interrupted wait took the post";
  ASSERT_EQ(Sem(M(1), {"wait", "0x6201"}).out, "waiting\nerrno 0\n");
  {
    Holder w(M(1), {SEM_CHECK, "wait", "0x6201"});
    ASSERT_EQ(w.Line(), "waiting");
    std::this_thread::sleep_for(200ms);
    ASSERT_EQ(Sem(M(0), {"rmid", "0x6201"}).exit_code, 0);
    EXPECT_EQ(w.Line(), "errno 43");  // EIDRM
  }
}

// The set lives with the node that made it: its values are kept in that
// node's state dir, so a restart of its daemon loses no post.
TEST_F(IpcShimTest, semaphore_values_survive_a_restart_of_their_owner) {
  ASSERT_EQ(Sem(M(1), {"make", "0x6301", "2", "5"}).exit_code, 0);
  ASSERT_EQ(Sem(M(0), {"post", "0x6301", "1"}).exit_code, 0);
  c_.node(1).Stop();
  ASSERT_EQ(c_.StartNode(1), "");
  EXPECT_EQ(Sem(M(0), {"get", "0x6301", "0"}).out, "5\n");
  EXPECT_EQ(Sem(M(0), {"get", "0x6301", "1"}).out, "6\n");
  EXPECT_EQ(Sem(M(1), {"get", "0x6301", "1"}).out, "6\n");
}

// A node serves more sets than it keeps state files open (at most 256): LTP
// semget05 makes 32,000 sets, and the owner kept a descriptor per set until
// it failed with EMFILE at ~17,000. Every set's value is still kept, on disk
// too: the owner reopens a set's file to save it, and a restart loads them.
TEST_F(IpcShimTest, an_owner_keeps_few_state_files_open_however_many_sets_it_serves) {
  constexpr int kSets = 300;
  const std::string mount = M(1);
  CommandResult made = RunInChild([&]() -> int {
    ipc::SysvSemaphores sems(mount);
    for (int i = 0; i < kSets; i++) {
      const int id = sems.Get(0x6400 + i, 1, IPC_CREAT | 0600);
      if (id < 0) return 10;
      struct sembuf up[1] = {{0, static_cast<short>(1 + i % 7), 0}};
      if (sems.Op(id, up, 1, nullptr) != 0) return 11;
    }
    return 0;
  }, 120s);
  ASSERT_EQ(made.exit_code, 0) << "10 create, 11 semop";
  const std::string states = c_.node(1).state_dir() + "/semaphores/";
  size_t open_states = 0;
  for (const auto& fd : std::filesystem::directory_iterator("/proc/" + std::to_string(c_.node(1).pid()) + "/fd")) {
    std::error_code ec;
    const std::string target = std::filesystem::read_symlink(fd.path(), ec).string();
    if (!ec && target.rfind(states, 0) == 0) open_states++;
  }
  EXPECT_LE(open_states, 256u) << "the owner holds a descriptor per set";
  c_.node(1).Stop();
  ASSERT_EQ(c_.StartNode(1), "");
  CommandResult read = RunInChild([&]() -> int {
    ipc::SysvSemaphores sems(mount);
    for (int i = 0; i < kSets; i++) {
      const int id = sems.Get(0x6400 + i, 1, 0600);
      if (id < 0) return 20;
      if (sems.Control(id, 0, GETVAL, ipc::SemArg{}) != 1 + i % 7) return 21;
      sems.Control(id, 0, IPC_RMID, ipc::SemArg{});
    }
    return 0;
  }, 120s);
  EXPECT_EQ(read.exit_code, 0) << "20 a set lost, 21 its value lost across the restart";
}

// More waiters than the mount has FUSE workers (64): a waiting semop must not
// hold one, or the post that would let them through could not be served
// (seen: the mount wedged once 64 processes waited).
TEST_F(IpcShimTest, a_crowd_of_waiters_does_not_take_every_worker_of_the_mount) {
  ASSERT_EQ(Sem(M(0), {"make", "0x6501", "1", "0"}).exit_code, 0);
  CommandResult r = RunCommand({SEM_CHECK, "crowd", "0x6501", "100"}, 60s, Env(M(1)));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "ok 100\n");
}

// A wait must never hang on an owner that is gone: it fails with EIO once
// this node's lease with the owner has run out.
TEST_F(IpcShimTest, a_waiter_whose_semaphore_owner_dies_gets_eio_not_a_hang) {
  ASSERT_EQ(Sem(M(1), {"make", "0x6401", "1", "0"}).exit_code, 0);
  Holder w(M(0), {SEM_CHECK, "wait", "0x6401"});
  ASSERT_EQ(w.Line(), "waiting");
  std::this_thread::sleep_for(200ms);
  c_.node(1).Kill9();
  EXPECT_EQ(w.Line(), "errno 5");
}

// ---- POSIX named semaphores

CommandResult Psem(const std::string& mount, std::vector<std::string> args) {
  args.insert(args.begin(), PSEM_CHECK);
  return RunCommand(args, 120s, Env(mount));
}

TEST_F(IpcShimTest, posix_named_semaphores_single_node_rules_errno_by_errno) {
  CommandResult r = Psem(M(1), {"local", "/cshm-psem-local"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "ok\n");
}

// The ring again, with named semaphores: a Python producer (ctypes) on node 0
// and a C consumer on node 1, no msync; sem_post is the release.
TEST_F(IpcShimTest, python_and_c_share_a_ring_through_posix_named_semaphores_across_nodes) {
  const std::string ring = "psem-ring";
  CommandResult consumed;
  std::thread consumer([&] { consumed = Psem(M(1), {"consume", "/cshm-ring", M(1) + "/" + ring, "10000"}); });
  CommandResult produced = RunCommand({"/usr/bin/python3", TESTS_DIR "/ipc/psem_producer.py", "/cshm-ring",
                                       M(0) + "/" + ring, "16", "10000"},
                                      120s, Env(M(0)));
  consumer.join();
  EXPECT_EQ(produced.exit_code, 0) << produced.err;
  EXPECT_EQ(consumed.exit_code, 0) << consumed.err;
  EXPECT_EQ(consumed.out, "ok 10000\n");
  EXPECT_EQ(Psem(M(0), {"get", "/cshm-ring-empty"}).out, "16\n");
  EXPECT_TRUE(std::filesystem::exists(M(1) + "/.posix/sem.cshm-ring-full")) << "not cshm's semaphore";
}

}  // namespace
}  // namespace cshm::testing
