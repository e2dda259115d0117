package tracing

import "go.opentelemetry.io/otel/attribute"

// Span names. Each is low-cardinality (a route, a stream, a step), as trace back ends group by name;
// what varies per notification is in the attributes. README "Tracing" lists them with their attributes.
const (
	SpanNotify        = "POST /notify/{mchid}"      // receiver: one notification, verified and stored
	SpanProcess       = "process WECHATPAY_INBOUND" // consumer: one delivery of an inbound message
	SpanDecrypt       = "decrypt"                   // consumer: open the resource
	SpanDedupeClaim   = "dedupe claim"              // consumer: claim one business fact
	SpanPublish       = "publish WECHATPAY_EVENTS"  // consumer: one CloudEvent, up to its PubAck
	SpanDedupeCommit  = "dedupe commit"             // consumer: the fact is done
	SpanDedupeRelease = "dedupe release"            // consumer: a claim given back after a failed publish
	SpanDeadLetter    = "publish WECHATPAY_DLQ"     // consumer: the dead-letter entry, up to its PubAck
	SpanReplay        = "replay WECHATPAY_DLQ"      // wxpayctl dlq replay: one dead letter sent back
)

// Attribute keys. The standard ones follow OpenTelemetry's HTTP and messaging conventions; the wxpay.*
// ones name the notification. None carries a body, a plaintext, a signature or a key.
const (
	AttrHTTPMethod      = attribute.Key("http.request.method")
	AttrHTTPRoute       = attribute.Key("http.route")
	AttrHTTPStatus      = attribute.Key("http.response.status_code")
	AttrMessagingSystem = attribute.Key("messaging.system")
	AttrOperation       = attribute.Key("messaging.operation.type")
	AttrDestination     = attribute.Key("messaging.destination.name")
	AttrMessageID       = attribute.Key("messaging.message.id")
	AttrDeliveries      = attribute.Key("messaging.nats.delivery_count")
	AttrStreamSeq       = attribute.Key("messaging.nats.stream_sequence")

	AttrMchID          = attribute.Key("wxpay.mchid")
	AttrNotificationID = attribute.Key("wxpay.notification_id")
	AttrEventType      = attribute.Key("wxpay.event_type") // WeChat Pay's event_type
	AttrType           = attribute.Key("wxpay.type")       // the domain type, e.g. payment.succeeded
	AttrRequestID      = attribute.Key("wxpay.request_id")
	AttrKeyID          = attribute.Key("wxpay.key_id") // the Wechatpay-Serial that verified it (a key id, not a key)
	AttrVerifyOutcome  = attribute.Key("wxpay.verify.outcome")
	AttrVerifyReason   = attribute.Key("wxpay.verify.reason")
	AttrPublishSeconds = attribute.Key("wxpay.publish.duration") // seconds
	AttrOutcome        = attribute.Key("wxpay.outcome")
	AttrReason         = attribute.Key("wxpay.reason")
	AttrEventID        = attribute.Key("wxpay.event_id")
	AttrEvents         = attribute.Key("wxpay.events")      // how many events (business facts) the notification made
	AttrRetryDelay     = attribute.Key("wxpay.retry.delay") // seconds
	AttrDedupeState    = attribute.Key("wxpay.dedupe.state")
	AttrDedupeCommit   = attribute.Key("wxpay.dedupe.commit")
	AttrDLQSeq         = attribute.Key("wxpay.dlq.seq")
	AttrDuplicate      = attribute.Key("wxpay.duplicate")
	AttrLinkKind       = attribute.Key("wxpay.link")
)

// Values of messaging.operation.type, wxpay.verify.outcome and wxpay.link.
const (
	Send    = "send"
	Process = "process"

	VerifyNotChecked = "not_checked" // refused before verification (unknown merchant, body too large)
	VerifyVerified   = "verified"
	VerifyFailed     = "failed"

	LinkIncoming     = "incoming_request"           // a receiver span's link to a caller's traceparent
	LinkDeadLettered = "dead_lettered_notification" // a replay span's link to the dead letter's trace
)

// Messaging returns the messaging attributes of an operation (Send or Process) of message msgID on
// subject.
func Messaging(operation, subject, msgID string) []attribute.KeyValue {
	return []attribute.KeyValue{
		AttrMessagingSystem.String("nats"), AttrOperation.String(operation),
		AttrDestination.String(subject), AttrMessageID.String(msgID),
	}
}
