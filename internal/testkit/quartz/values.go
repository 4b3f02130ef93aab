package quartz

import (
	"fmt"
	"math/rand/v2"
	"strings"
)

// The generators below pick values the way a varied production scheduler has
// them, with the edge cases a replication tool must carry unchanged: NULL and
// empty strings, quotes and backslashes, multi-byte text at the column's
// character limit, negative and extreme integers, and large binary values.

// groups are the job and trigger groups; one is not ASCII so that a key
// column holds multi-byte text too.
var groups = []string{"DEFAULT", "reports", "billing", "etl", "notifications", "maintenance", "レポート"}

var jobClasses = []string{
	"com.example.jobs.ReportJob",
	"com.example.jobs.InvoiceRunJob",
	"com.example.etl.NightlyImportJob",
	"com.example.mail.DigestMailerJob",
	"org.springframework.scheduling.quartz.QuartzJobBean",
	"org.quartz.jobs.NoOpJob",
	"org.quartz.jobs.ee.mail.SendMailJob",
}

var calendarNames = []string{"holidays", "weekdays", "business-hours", "maintenance-window"}

var calendarClasses = []string{
	"org.quartz.impl.calendar.HolidayCalendar",
	"org.quartz.impl.calendar.WeeklyCalendar",
	"org.quartz.impl.calendar.DailyCalendar",
	"org.quartz.impl.calendar.CronCalendar",
}

var timeZones = []string{"UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo", "Australia/Lord_Howe"}

var phrases = []string{
	"Nightly export of the ledger",
	"Send the weekly digest",
	"Purge expired sessions",
	"Rebuild search index",
	"Reconcile payments with the bank's file",
	`O'Reilly said "quoted", back\slash \\ and a tab	here`,
}

var unicodePhrases = []string{
	"Rapport quotidien — été, façade, naïve",
	"日次バッチ処理（売上集計）",
	"Ежедневный отчёт по заданиям",
	"Σύνοψη εβδομάδας · ⏰ 🗓️ backup",
	"Straße ÄÖÜ ß ﬁ ligature, e\u0301 combining",
	"مهمة التقرير اليومي",
}

// description returns a trigger or job description: NULL, empty, ASCII,
// unicode, or exactly 250 characters (the column's limit, in characters,
// not bytes).
func description(r *rand.Rand) *string {
	var s string
	switch p := r.IntN(100); {
	case p < 15:
		return nil
	case p < 25:
		s = ""
	case p < 65:
		s = phrases[r.IntN(len(phrases))]
	case p < 95:
		s = unicodePhrases[r.IntN(len(unicodePhrases))]
	default:
		s = strings.Repeat("é", 250)
	}
	return &s
}

// priority is mostly Quartz's default 5.
func priority(r *rand.Rand) int32 {
	switch p := r.IntN(100); {
	case p < 70:
		return 5
	case p < 95:
		return int32(r.IntN(10)) + 1
	case p < 98:
		return -int32(r.IntN(100)) - 1
	default:
		return 2147483647
	}
}

// misfireInstruction picks a valid instruction for the trigger type:
// -1 ignore misfires, 0 smart policy, then the type's own.
func misfireInstruction(r *rand.Rand, kind string) int16 {
	switch kind {
	case kindSimple:
		return int16(r.IntN(7)) - 1 // -1..5
	case kindCron, kindCalInt, kindDaily:
		return int16(r.IntN(4)) - 1 // -1..2
	default:
		return int16(r.IntN(2)) - 1
	}
}

// statusValues are the strings a job writes into its JobDataMap.
var statusValues = []string{"OK", "FAILED", "RETRY", "", "partial: 3/7 files"}

// jobData is a JobDataMap after runs counted by counter; the payload entry,
// 50–800 random bytes, gives every rewrite a different size.
func jobData(r *rand.Rand, owner string, counter int64) []byte {
	return jobDataMap([]mapEntry{
		{"jobRunCount", counter},
		{"lastRunBy", owner},
		{"lastStatus", statusValues[r.IntN(len(statusValues))]},
		{"cursor", fmt.Sprintf("%016x", r.Uint64())},
		{"payload", randomBytes(r, 50+r.IntN(751))},
	})
}

// triggerData is a trigger's own JobDataMap: usually none, sometimes small,
// and in 5% of triggers larger than PostgreSQL's TOAST threshold (random
// bytes do not compress), so that the fire step's updates of other columns
// leave an unchanged out-of-line value behind — the case logical decoding
// reports as "unchanged TOAST".
func triggerData(r *rand.Rand) []byte {
	switch p := r.IntN(100); {
	case p < 70:
		return nil
	case p < 95:
		return jobDataMap([]mapEntry{{"source", "trigger"}, {"batch", int64(r.IntN(1000))}})
	default:
		return jobDataMap([]mapEntry{{"source", "trigger"}, {"blob", randomBytes(r, 3000+r.IntN(9000))}})
	}
}

// calendarData is a serialized calendar of one of the seeded kinds.
func calendarData(r *rand.Rand, i int) []byte {
	return serializedObject(r, calendarClasses[i%len(calendarClasses)], []mapEntry{
		{"description", phrases[r.IntN(len(phrases))]},
		{"timeZone", timeZones[r.IntN(len(timeZones))]},
	}, 100+r.IntN(1500))
}

// blobData is a serialized custom trigger, now and then big enough to be
// stored out of line.
func blobData(r *rand.Rand, fired int64) []byte {
	n := 200 + r.IntN(2800)
	if r.IntN(20) == 0 {
		n = 4000 + r.IntN(16000)
	}
	return serializedObject(r, "com.example.scheduling.BusinessDayTrigger", []mapEntry{
		{"fireCount", fmt.Sprint(fired)},
		{"region", timeZones[r.IntN(len(timeZones))]},
	}, n)
}

// simpleIntervals are repeat intervals in milliseconds; most are shorter
// than the acquisition window so that triggers are due again and again.
var simpleIntervals = []int64{100, 250, 500, 1000, 1000, 2000, 5000, 10000, 15000, 60000, 3600000}

// cronSchedules pair expressions with their period, which stands in for a
// real cron evaluation: the next fire time is the next multiple of period.
var cronSchedules = []struct {
	expr   string
	period int64
}{
	{"0/1 * * * * ?", 1000},
	{"*/2 * * * * ?", 2000},
	{"0/5 * * * * ?", 5000},
	{"0/5 * * * * ?", 5000},
	{"0/10 * * * * ?", 10000},
	{"0/15 * * * * ?", 15000},
	{"0/30 * * * * ?", 30000},
	{"0 * * * * ?", 60000},
	{"0 0/5 * * * ?", 300000},
	{"0 0 12 * * ?", 86400000},
	{"0 15 10 ? * MON-FRI", 86400000},
}

// cronPeriod returns the period of a known expression, a minute otherwise.
func cronPeriod(expr string) int64 {
	for _, c := range cronSchedules {
		if c.expr == expr {
			return c.period
		}
	}
	return 60000
}

// intervalUnits are the calendar-interval units the generator uses, with
// their length in milliseconds.
var intervalUnits = map[string]int64{"SECOND": 1000, "MINUTE": 60000}
