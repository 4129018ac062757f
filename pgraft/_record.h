/*
 * pgraft/_record.h - CRC32C and the log record layout, shared by _core.pyx
 * (frames) and _log.pyx (segment files): one format on disk and on the wire
 * (docs/design.md rule 4).
 *
 * Record (all little-endian):
 *   off  0  u32  crc      CRC32C of bytes [4, 28 + length)
 *   off  4  u32  length   payload length in bytes
 *   off  8  u64  index
 *   off 16  u64  term
 *   off 24  u8   type     ENTRY_* constant
 *   off 25  u8[3]         reserved, must be zero
 *   off 28  payload
 */
#ifndef PGRAFT_RECORD_H
#define PGRAFT_RECORD_H

#include <stdint.h>
#include <stddef.h>
#include <string.h>

#define PGRAFT_RECORD_HEADER_SIZE 28

static uint32_t pgraft_crc_table[8][256];
static int pgraft_crc_hw = 0;

static void pgraft_crc_init_table(void) {
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : (c >> 1);
        pgraft_crc_table[0][n] = c;
    }
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = pgraft_crc_table[0][n];
        for (int k = 1; k < 8; k++) {
            c = pgraft_crc_table[0][c & 0xff] ^ (c >> 8);
            pgraft_crc_table[k][n] = c;
        }
    }
}

/* Slice-by-8 software CRC32C on the raw (pre/post-inverted by caller) state. */
static uint32_t pgraft_crc_sw(uint32_t c, const unsigned char *p, size_t n) {
    while (n && ((uintptr_t)p & 7)) { c = pgraft_crc_table[0][(c ^ *p++) & 0xff] ^ (c >> 8); n--; }
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        uint32_t lo = (uint32_t)w ^ c, hi = (uint32_t)(w >> 32);
        c = pgraft_crc_table[7][lo & 0xff] ^ pgraft_crc_table[6][(lo >> 8) & 0xff] ^
            pgraft_crc_table[5][(lo >> 16) & 0xff] ^ pgraft_crc_table[4][lo >> 24] ^
            pgraft_crc_table[3][hi & 0xff] ^ pgraft_crc_table[2][(hi >> 8) & 0xff] ^
            pgraft_crc_table[1][(hi >> 16) & 0xff] ^ pgraft_crc_table[0][hi >> 24];
        p += 8; n -= 8;
    }
    while (n--) c = pgraft_crc_table[0][(c ^ *p++) & 0xff] ^ (c >> 8);
    return c;
}

#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("sse4.2")))
static uint32_t pgraft_crc_hw_impl(uint32_t c, const unsigned char *p, size_t n) {
    uint64_t c64 = c;
    while (n >= 8) { uint64_t w; memcpy(&w, p, 8); c64 = __builtin_ia32_crc32di(c64, w); p += 8; n -= 8; }
    c = (uint32_t)c64;
    while (n--) c = __builtin_ia32_crc32qi(c, *p++);
    return c;
}
static int pgraft_crc_detect_hw(void) { __builtin_cpu_init(); return __builtin_cpu_supports("sse4.2"); }
#elif defined(__aarch64__) && defined(__GNUC__)
#include <sys/auxv.h>
#ifndef HWCAP_CRC32
#define HWCAP_CRC32 (1 << 7)
#endif
__attribute__((target("+crc")))
static uint32_t pgraft_crc_hw_impl(uint32_t c, const unsigned char *p, size_t n) {
    while (n >= 8) { uint64_t w; memcpy(&w, p, 8); c = __builtin_aarch64_crc32cx(c, w); p += 8; n -= 8; }
    while (n--) c = __builtin_aarch64_crc32cb(c, *p++);
    return c;
}
static int pgraft_crc_detect_hw(void) { return (getauxval(AT_HWCAP) & HWCAP_CRC32) != 0; }
#else
static uint32_t pgraft_crc_hw_impl(uint32_t c, const unsigned char *p, size_t n) { return pgraft_crc_sw(c, p, n); }
static int pgraft_crc_detect_hw(void) { return 0; }
#endif

/* Call once at module import, before any pgraft_crc32c(). */
static void pgraft_crc_init(void) {
    pgraft_crc_init_table();
    pgraft_crc_hw = pgraft_crc_detect_hw();
}

/* CRC32C (Castagnoli) continuing from `crc` (0 to start), standard pre/post inversion. */
static inline uint32_t pgraft_crc32c(uint32_t crc, const unsigned char *p, size_t n) {
    uint32_t c = ~crc;
    c = pgraft_crc_hw ? pgraft_crc_hw_impl(c, p, n) : pgraft_crc_sw(c, p, n);
    return ~c;
}

static inline void pgraft_store_u32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static inline void pgraft_store_u64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static inline uint32_t pgraft_load_u32(const unsigned char *p) {
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}
static inline uint64_t pgraft_load_u64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

/* Write one record (header + payload) to `dst`, which must hold 28 + len bytes. */
static inline void pgraft_record_write(unsigned char *dst, uint64_t index, uint64_t term,
                                       uint8_t type, const unsigned char *payload, uint32_t len) {
    pgraft_store_u32(dst + 4, len);
    pgraft_store_u64(dst + 8, index);
    pgraft_store_u64(dst + 16, term);
    dst[24] = type; dst[25] = 0; dst[26] = 0; dst[27] = 0;
    if (len) memcpy(dst + PGRAFT_RECORD_HEADER_SIZE, payload, len);
    pgraft_store_u32(dst, pgraft_crc32c(0, dst + 4, (size_t)PGRAFT_RECORD_HEADER_SIZE - 4 + len));
}

/*
 * Check the record at `p` with `avail` readable bytes.
 * Returns 0 if valid (and fills the outputs), otherwise a negative code:
 *  -1 header truncated, -2 payload truncated or length over max_payload,
 *  -3 reserved bytes not zero, -4 CRC mismatch.
 */
static inline int pgraft_record_check(const unsigned char *p, size_t avail, uint32_t max_payload,
                                      uint32_t *len, uint64_t *index, uint64_t *term, uint8_t *type) {
    if (avail < PGRAFT_RECORD_HEADER_SIZE) return -1;
    uint32_t l = pgraft_load_u32(p + 4);
    if (l > max_payload || (size_t)l > avail - PGRAFT_RECORD_HEADER_SIZE) return -2;
    if (p[25] | p[26] | p[27]) return -3;
    if (pgraft_crc32c(0, p + 4, (size_t)PGRAFT_RECORD_HEADER_SIZE - 4 + l) != pgraft_load_u32(p)) return -4;
    *len = l;
    *index = pgraft_load_u64(p + 8);
    *term = pgraft_load_u64(p + 16);
    *type = p[24];
    return 0;
}

#endif
