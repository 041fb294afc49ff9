/* C port of /tmp/redlock_fence_jump.py (same transition relation, exact states, no hash compaction).
   Usage: fence MODE[+incr] [clients]; env N (nodes, <=3), JUMP, BREAK, STRICT, RETRY, LOG2CAP. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <time.h>

typedef unsigned __int128 u128;
static int N = 3, C = 2, Q, INCR, RESTARTS, SEEDED, ONEROUND, JUMP = 2, BREAK = 0, STRICT = 0, RETRY = 0;
static long long eq_hits = 0;

typedef struct { uint8_t ph, r1p, grp, grv[3], r2p, acks, t; int8_t st, dn; } Cl;
typedef struct { uint8_t h[3], f[3]; Cl c[2]; uint8_t clock, restarts; } S;

static void put(u128 *x, int *pos, unsigned v, int bits) {
    if (v >= (1u << bits)) { fprintf(stderr, "overflow: value %u in %d bits\n", v, bits); exit(3); }
    *x |= (u128)v << *pos; *pos += bits;
}
static unsigned get(u128 x, int *pos, int bits) { unsigned v = (unsigned)(x >> *pos) & ((1u << bits) - 1); *pos += bits; return v; }

static u128 pack(const S *s) {
    u128 x = 0; int p = 0;
    for (int i = 0; i < 3; i++) { put(&x, &p, s->h[i], 2); put(&x, &p, s->f[i], 6); }
    for (int c = 0; c < 2; c++) {
        const Cl *k = &s->c[c];
        put(&x, &p, k->ph, 3); put(&x, &p, k->r1p, 3); put(&x, &p, k->grp, 3);
        for (int i = 0; i < 3; i++) put(&x, &p, k->grv[i], 6);
        put(&x, &p, k->r2p, 3); put(&x, &p, k->acks, 3); put(&x, &p, k->t, 6);
        put(&x, &p, (unsigned)(k->st + 1), 3); put(&x, &p, (unsigned)(k->dn + 1), 3);
    }
    put(&x, &p, s->clock, 3); put(&x, &p, s->restarts, 1);
    x |= (u128)1 << 127; /* never zero */
    return x;
}
static void unpack(u128 x, S *s) {
    int p = 0;
    for (int i = 0; i < 3; i++) { s->h[i] = get(x, &p, 2); s->f[i] = get(x, &p, 6); }
    for (int c = 0; c < 2; c++) {
        Cl *k = &s->c[c];
        k->ph = get(x, &p, 3); k->r1p = get(x, &p, 3); k->grp = get(x, &p, 3);
        for (int i = 0; i < 3; i++) k->grv[i] = get(x, &p, 6);
        k->r2p = get(x, &p, 3); k->acks = get(x, &p, 3); k->t = get(x, &p, 6);
        k->st = (int8_t)get(x, &p, 3) - 1; k->dn = (int8_t)get(x, &p, 3) - 1;
    }
    s->clock = get(x, &p, 3); s->restarts = get(x, &p, 1);
}

/* hash set */
static u128 *tab; static uint64_t cap, mask, count;
static uint64_t hh(u128 x) {
    uint64_t a = (uint64_t)x, b = (uint64_t)(x >> 64);
    uint64_t z = a ^ (b * 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL; z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}
static int insert(u128 x) { /* 1 if new */
    uint64_t i = hh(x) & mask;
    for (;;) {
        if (tab[i] == 0) { tab[i] = x; if (++count > cap / 10 * 9) { fprintf(stderr, "table full at %llu\n", (unsigned long long)count); exit(4); } return 1; }
        if (tab[i] == x) return 0;
        i = (i + 1) & mask;
    }
}
/* stack */
static u128 *stk; static size_t sp, scap;
static int SYM = 0;
/* canonical representative under node permutations (sort node columns) and client swap */
static u128 canon1(const S *s) {
    unsigned key[3]; int ord[3] = {0, 1, 2};
    for (int n = 0; n < 3; n++) {
        unsigned k = s->h[n]; k = k << 6 | s->f[n];
        for (int c = 0; c < 2; c++) {
            const Cl *q = &s->c[c];
            k = k << 1 | (q->r1p >> n & 1); k = k << 1 | (q->grp >> n & 1); k = k << 6 | q->grv[n];
            k = k << 1 | (q->r2p >> n & 1); k = k << 1 | (q->acks >> n & 1);
        }
        key[n] = n < N ? k : 0xFFFFFFFFu; /* unused node slots stay last */
    }
    for (int i = 0; i < 3; i++) for (int j = i + 1; j < 3; j++) if (key[ord[j]] < key[ord[i]]) { int x = ord[i]; ord[i] = ord[j]; ord[j] = x; }
    S t = *s;
    for (int i = 0; i < 3; i++) {
        int n = ord[i]; t.h[i] = s->h[n]; t.f[i] = s->f[n];
        for (int c = 0; c < 2; c++) {
            const Cl *q = &s->c[c]; Cl *r = &t.c[c];
            if (i == 0) { r->r1p = r->grp = r->r2p = r->acks = 0; }
            r->r1p |= (q->r1p >> n & 1) << i; r->grp |= (q->grp >> n & 1) << i; r->grv[i] = q->grv[n];
            r->r2p |= (q->r2p >> n & 1) << i; r->acks |= (q->acks >> n & 1) << i;
        }
    }
    return pack(&t);
}
static u128 canon(const S *s) {
    if (!SYM) return pack(s);
    u128 a = canon1(s);
    if (C < 2) return a;
    S w = *s; w.c[0] = s->c[1]; w.c[1] = s->c[0];
    for (int n = 0; n < 3; n++) if (w.h[n]) w.h[n] = 3 - w.h[n];
    u128 b = canon1(&w);
    return a < b ? a : b;
}
static void emit(const S *s) {
    u128 x = canon(s);
    if (insert(x)) {
        if (sp == scap) { scap = scap ? scap * 2 : (1 << 20); stk = realloc(stk, scap * sizeof(u128)); if (!stk) { fprintf(stderr, "stack oom\n"); exit(5); } }
        stk[sp++] = x;
    }
}
static int popc(unsigned v) { return __builtin_popcount(v); }
static int maxg(const Cl *k) { int m = -1; for (int n = 0; n < N; n++) if (k->grp >> n & 1) if (k->grv[n] > m) m = k->grv[n]; return m; }

static void succ(const S *s) {
    S t;
    for (int c = 0; c < C; c++) {
        const Cl *k = &s->c[c];
        if (k->ph == 0) { t = *s; t.c[c].ph = 1; t.c[c].r1p = (1 << N) - 1; t.c[c].st = s->clock; t.clock = s->clock + 1; emit(&t); }
        for (int n = 0; n < N; n++) if (k->r1p >> n & 1) {
            if (s->h[n] == 0) {
                int lo = INCR ? 1 : (ONEROUND ? 1 : 0), hi = INCR ? JUMP : lo;
                for (int j = lo; j <= hi; j++) {
                    t = *s; t.h[n] = c + 1; t.f[n] = s->f[n] + j; t.c[c].r1p &= ~(1 << n);
                    if (k->ph == 1) { t.c[c].grp |= 1 << n; t.c[c].grv[n] = s->f[n] + j; }
                    emit(&t);
                }
            } else { t = *s; t.c[c].r1p &= ~(1 << n); emit(&t); }
        }
        if (k->ph == 1 && popc(k->grp) >= Q && ONEROUND) { t = *s; t.c[c].ph = 3; t.c[c].t = maxg(k); t.c[c].dn = s->clock; t.clock = s->clock + 1; emit(&t); }
        if (k->ph == 1 && popc(k->grp) >= Q && !ONEROUND) { t = *s; t.c[c].ph = 2; t.c[c].t = maxg(k) + 1; t.c[c].r2p = k->grp; emit(&t); }
        if (k->ph == 1 || k->ph == 2) { t = *s; t.c[c].ph = 4; emit(&t); }
        for (int n = 0; n < N; n++) if (k->r2p >> n & 1) {
            int h = s->h[n], f = s->f[n], tt = k->t;
            int ok = (h == c + 1 || (BREAK & 2)) && ((BREAK & 1) || (STRICT ? f < tt : f <= tt));
            if (ok && f == tt) eq_hits++;
            t = *s;
            if (ok) t.f[n] = tt;
            if (ok && k->ph == 2) t.c[c].acks |= 1 << n;
            if (RETRY) emit(&t);
            t.c[c].r2p &= ~(1 << n); emit(&t);
        }
        if (k->ph == 2 && popc(k->acks) >= Q) { t = *s; t.c[c].ph = 3; t.c[c].dn = s->clock; t.clock = s->clock + 1; emit(&t); }
    }
    for (int n = 0; n < N; n++) {
        if (s->h[n]) { t = *s; t.h[n] = 0; emit(&t); }
        if (RESTARTS && s->restarts < 1 && (s->h[n] || s->f[n])) {
            int seed = 0;
            if (SEEDED) { int m = 0; for (int i = 0; i < N; i++) if (s->f[i] > m) m = s->f[i]; for (int i = 0; i < C; i++) if (s->c[i].t > m) m = s->c[i].t; seed = m + 1; }
            t = *s; t.h[n] = 0; t.f[n] = seed; t.restarts = s->restarts + 1; emit(&t);
        }
    }
}

static const char *check(const S *s, char *buf) {
    for (int a = 0; a < C; a++) for (int b = 0; b < C; b++) {
        const Cl *A = &s->c[a], *B = &s->c[b];
        if (A->ph != 3 || B->ph != 3) continue;
        if (a < b && A->t == B->t) { sprintf(buf, "duplicate token %d for clients %d and %d", A->t, a, b); return buf; }
    }
    for (int a = 0; a < C; a++) for (int b = 0; b < C; b++) {
        const Cl *A = &s->c[a], *B = &s->c[b];
        if (A->ph != 3 || B->ph != 3 || a == b) continue;
        if (B->st > A->dn && !(B->t > A->t)) { sprintf(buf, "client %d started after client %d succeeded but got token %d <= %d", b, a, B->t, A->t); return buf; }
    }
    return NULL;
}
static void show(const S *s) {
    printf("state: nodes=");
    for (int n = 0; n < N; n++) printf("(%s,%d)", s->h[n] ? (s->h[n] == 1 ? "c0" : "c1") : "None", s->f[n]);
    for (int c = 0; c < C; c++) {
        const Cl *k = &s->c[c];
        printf(" c%d[ph=%d r1p=%x gr={", c, k->ph, k->r1p);
        for (int n = 0; n < N; n++) if (k->grp >> n & 1) printf("%d:%d ", n, k->grv[n]);
        printf("} r2p=%x acks=%x t=%d st=%d dn=%d]", k->r2p, k->acks, k->t, k->st, k->dn);
    }
    printf(" clock=%d restarts=%d\n", s->clock, s->restarts);
}

int main(int argc, char **argv) {
    char mode[64] = "norestart";
    if (argc > 1) snprintf(mode, sizeof mode, "%s", argv[1]);
    size_t L = strlen(mode);
    if (L >= 5 && !strcmp(mode + L - 5, "+incr")) { INCR = 1; mode[L - 5] = 0; }
    if (argc > 2) C = atoi(argv[2]);
    if (getenv("N")) N = atoi(getenv("N"));
    if (getenv("JUMP")) JUMP = atoi(getenv("JUMP"));
    if (getenv("BREAK")) BREAK = atoi(getenv("BREAK"));
    STRICT = getenv("STRICT") && !strcmp(getenv("STRICT"), "1");
    SYM = getenv("SYM") && !strcmp(getenv("SYM"), "1");
    RETRY = getenv("RETRY") && !strcmp(getenv("RETRY"), "1");
    if (N > 3 || C > 2 || N < 1 || C < 1) { fprintf(stderr, "N<=3, C<=2\n"); return 2; }
    Q = N / 2 + 1;
    RESTARTS = !strcmp(mode, "restarts") || !strcmp(mode, "seeded");
    SEEDED = !strcmp(mode, "seeded");
    ONEROUND = !strcmp(mode, "oneround");
    int lg = getenv("LOG2CAP") ? atoi(getenv("LOG2CAP")) : 28;
    cap = 1ULL << lg; mask = cap - 1;
    tab = calloc(cap, sizeof(u128));
    if (!tab) { fprintf(stderr, "no memory for table\n"); return 5; }
    clock_t t0 = clock();
    S s0; memset(&s0, 0, sizeof s0);
    for (int c = 0; c < 2; c++) { s0.c[c].st = -1; s0.c[c].dn = -1; }
    emit(&s0);
    char buf[200]; const char *bad = NULL; S s;
    while (sp) {
        unpack(stk[--sp], &s);
        if ((bad = check(&s, buf))) break;
        succ(&s);
    }
    printf("N=%d clients=%d mode=%s%s: states=%llu JUMP=%d BREAK=%d STRICT=%d RETRY=%d SYM=%d eq_hits=%lld time=%.1fs %s%s\n",
           N, C, mode, INCR ? "+incr" : "", (unsigned long long)count, JUMP, BREAK, STRICT, RETRY, SYM, eq_hits,
           (double)(clock() - t0) / CLOCKS_PER_SEC, bad ? "VIOLATION: " : "no violation", bad ? bad : "");
    if (bad) show(&s);
    return 0;
}
