// Package samples holds realistic decrypted notification resources (the
// plaintext of resource.ciphertext), one per WeChat Pay event type and variant,
// for the simulator and for tests. They are shaped after published samples but
// edited so that each is its own business fact; the published samples
// themselves, unedited and each with its source, are in
// internal/events/testdata/real and are what proves the mapping right.
//
// A file is named <EVENT_TYPE>[.<variant>].json. The merchant fields that name
// the account a notification is sent to (mchid, sp_mchid, combine_mchid) are
// the simulated merchant 1900000100, so that each sample is consistent with
// the merchant it is posted to; sub-merchants keep the published values. The contents follow the
// official samples as quoted in the project's PROTOCOL-NOTES §4:
//   - TRANSACTION.SUCCESS{,.partner,.global,.global-partner}: fudiwei/DotNetCore.SKIT.FlurlHttpClient.Wechat
//     test/…/EventSamples/_/Transactions/TransactionResource.json, …/_/_Partner/Transactions/PartnerTransactionResource.json,
//     …/Global/Transactions/TransactionResource.json and …/HKPartnerTransactions/HKPartnerTransactionResource.json
//     (the SKIT samples repeat one promotion entry twice; it is kept once). Each variant is its own
//     business fact, so the partner and global-partner order numbers differ from the samples' by one
//     digit (the originals share them, and would deduplicate into one event).
//   - TRANSACTION.FAIL, TRANSACTION.PAY_BACK: TheNorthMemory/wechatpay.js.org webhook/v3/TRANSACTION.FAIL.md and
//     TRANSACTION.PAY_BACK.md, without transaction_id like the published samples (a parking deduction is
//     keyed by ordering merchant + out_trade_no + trade_state); its trailing comma after amount.currency
//     was removed.
//   - TRANSACTION.SUCCESS.parking: the same parking deduction shape with trade_state SUCCESS and its own
//     out_trade_no, no transaction_id.
//   - TRANSACTION.SUCCESS.combine: a combined payment (合单) with two sub-orders, shaped after SKIT
//     …/_/CombineTransactions/CombineTransactionResource.json (one payment.succeeded per sub-order).
//   - REFUND.SUCCESS{,.global}: SKIT …/_/Refund/RefundResource.json and …/Global/Refund/RefundResource.json
//     (the global refund_id changed by one digit, for the same reason).
//   - REFUND.ABNORMAL, REFUND.CLOSED: wechatpay.js.org webhook/v3/REFUND.ABNORMAL.md and REFUND.CLOSED.md,
//     without the success_time the doc copied from REFUND.SUCCESS (it is sent only on success).
//   - VIOLATION.*: SKIT …/Violation/ViolationResource.json (the doc pages' key "risk_description\t" with a tab
//     is a doc typo and is spelt plainly here).
//   - VEHICLE.ENTRANCE_STATE_CHANGE: SKIT …/_/Vehicle/VehicleEntranceStateChangeResource.json, keeping the
//     milliseconds of state_update_time.
package samples

import (
	"embed"
	"path"
	"strings"
)

//go:embed *.json
var files embed.FS

// All returns every sample, keyed by file base name without ".json"
// (e.g. "TRANSACTION.SUCCESS.partner"). The map and slices are fresh copies.
func All() map[string][]byte {
	entries, err := files.ReadDir(".")
	if err != nil { // unreachable: the directory is embedded
		panic(err)
	}
	out := make(map[string][]byte, len(entries))
	for _, e := range entries {
		b, err := files.ReadFile(e.Name())
		if err != nil { // unreachable: the file is embedded
			panic(err)
		}
		out[strings.TrimSuffix(e.Name(), path.Ext(e.Name()))] = b
	}
	return out
}

// EventType returns the WeChat event_type of the sample called name, i.e. name
// without its variant suffix: "TRANSACTION.SUCCESS.global-partner" gives
// "TRANSACTION.SUCCESS". Event-type segments are upper case; the first segment
// holding a lower-case letter starts the variant.
func EventType(name string) string {
	name = strings.TrimSuffix(name, ".json")
	segs := strings.Split(name, ".")
	for i, s := range segs {
		if strings.ToUpper(s) != s {
			return strings.Join(segs[:i], ".")
		}
	}
	return name
}
