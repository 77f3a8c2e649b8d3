// Clang's thread-safety annotations (-Wthread-safety; leveldb's
// port/thread_annotations.h is the model): which mutex guards a field,
// which a function needs held or must not hold. Empty under GCC, which
// builds the project; the suite compiles the annotated files with clang to
// check them (tests/static/thread_safety.sh).
//
//   Mutex mu_;
//   int n_ GUARDED_BY(mu_);
//   void AddLocked() REQUIRES(mu_);
//   void Add() EXCLUDES(mu_);
#pragma once

#if defined(__clang__)
#define CSHM_TSA(x) __attribute__((x))
#else
#define CSHM_TSA(x)
#endif

#define CAPABILITY(x) CSHM_TSA(capability(x))
#define SCOPED_CAPABILITY CSHM_TSA(scoped_lockable)
#define GUARDED_BY(x) CSHM_TSA(guarded_by(x))
#define PT_GUARDED_BY(x) CSHM_TSA(pt_guarded_by(x))
#define ACQUIRED_BEFORE(...) CSHM_TSA(acquired_before(__VA_ARGS__))
#define ACQUIRED_AFTER(...) CSHM_TSA(acquired_after(__VA_ARGS__))
#define REQUIRES(...) CSHM_TSA(requires_capability(__VA_ARGS__))
#define REQUIRES_SHARED(...) CSHM_TSA(requires_shared_capability(__VA_ARGS__))
#define ACQUIRE(...) CSHM_TSA(acquire_capability(__VA_ARGS__))
#define ACQUIRE_SHARED(...) CSHM_TSA(acquire_shared_capability(__VA_ARGS__))
#define RELEASE(...) CSHM_TSA(release_capability(__VA_ARGS__))
#define RELEASE_SHARED(...) CSHM_TSA(release_shared_capability(__VA_ARGS__))
#define TRY_ACQUIRE(...) CSHM_TSA(try_acquire_capability(__VA_ARGS__))
#define EXCLUDES(...) CSHM_TSA(locks_excluded(__VA_ARGS__))
#define ASSERT_CAPABILITY(x) CSHM_TSA(assert_capability(x))
#define RETURN_CAPABILITY(x) CSHM_TSA(lock_returned(x))
#define NO_THREAD_SAFETY_ANALYSIS CSHM_TSA(no_thread_safety_analysis)
